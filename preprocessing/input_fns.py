"""tf.data input functions: prepared shards → batches, laid out per replica.

Language models use truncated backpropagation through time (BPTT): the split's token stream is laid
out as ``B`` parallel streams (rows) and cut into windows of ``T`` steps. Window ``k`` of row ``b``
continues window ``k-1`` of the same row, so the final recurrent state of one batch is the right
initial state for the next.

Under a ``tf.distribute`` strategy each replica keeps its own carried state, so each replica must see
the *same rows* at every step. :func:`bptt_dataset_fn` builds the per-worker dataset for
``strategy.distribute_datasets_from_function``: worker ``w`` owns a contiguous block of rows and
emits, for each window, one element per local replica in replica order (the strategy hands
consecutive elements to its local replicas in order). Replica ``r`` (global id) therefore always gets
rows ``[r*b, (r+1)*b)`` of the global layout, which is the same order ``strategy.gather`` uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.manifest import load_manifest, split_paths


def read_split(data_dir: str | os.PathLike, split: str, task: str | None = None) -> tf.data.Dataset:
    """The split's examples in corpus order, parsed with the task's feature schema."""
    manifest = load_manifest(data_dir)
    task = task or manifest["task"]
    paths = split_paths(data_dir, manifest, split)
    ds = tf.data.TFRecordDataset(paths, compression_type="GZIP")  # sequential: keeps file order
    return ds.map(lambda s: schema.parse_example(task, s), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def lm_token_stream(data_dir: str | os.PathLike, split: str) -> np.ndarray:
    """All ids of a language-model split, concatenated in corpus order (each line ends with ``<eos>``)."""
    chunks = [ex["ids"] for ex in read_split(data_dir, split, "lm").as_numpy_iterator()]
    if not chunks:
        return np.zeros([0], np.int32)
    return np.concatenate(chunks).astype(np.int32)


@dataclass(frozen=True)
class BPTTLayout:
    """A token stream laid out as ``num_streams`` rows cut into windows of ``bptt`` steps."""

    inputs: np.ndarray  # [num_streams, length]
    targets: np.ndarray  # [num_streams, length], inputs shifted by one
    bptt: int

    @property
    def num_streams(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_windows(self) -> int:
        """Full windows only (training); :meth:`windows` with ``drop_remainder=False`` adds a last short one."""
        return int(self.inputs.shape[1] // self.bptt)

    @property
    def num_targets(self) -> int:
        return int(self.targets.size)

    def windows(self, rows: slice = slice(None), drop_remainder: bool = True):
        """Yields ``(inputs, targets)`` windows ``[rows, <=bptt]`` in order."""
        length = self.inputs.shape[1]
        stop = self.num_windows * self.bptt if drop_remainder else length
        for start in range(0, stop, self.bptt):
            end = min(start + self.bptt, length)
            yield self.inputs[rows, start:end], self.targets[rows, start:end]


def bptt_layout(stream: np.ndarray, num_streams: int, bptt: int) -> BPTTLayout:
    """Cuts a 1-D id stream into ``num_streams`` contiguous rows (the few tokens left over are dropped)."""
    stream = np.asarray(stream)
    row_len = len(stream) // num_streams
    if row_len < 2:
        raise ValueError(
            f"a stream of {len(stream)} tokens is too short for {num_streams} parallel streams; "
            "use a smaller batch size or more data"
        )
    rows = stream[: row_len * num_streams].reshape(num_streams, row_len)
    return BPTTLayout(inputs=rows[:, :-1], targets=rows[:, 1:], bptt=bptt)


def _replica_windows(layout: BPTTLayout, first_row: int, rows_per_replica: int, local_replicas: int):
    """Arrays ``[num_windows * local_replicas, rows_per_replica, bptt]`` ordered window-major, replica-minor."""
    out = []
    for array in (layout.inputs, layout.targets):
        block = array[first_row : first_row + rows_per_replica * local_replicas, : layout.num_windows * layout.bptt]
        block = block.reshape(local_replicas, rows_per_replica, layout.num_windows, layout.bptt)
        block = block.transpose(2, 0, 1, 3).reshape(-1, rows_per_replica, layout.bptt)
        out.append(np.ascontiguousarray(block))
    return out


def bptt_dataset_fn(
    layout: BPTTLayout,
    *,
    shuffle_windows: bool = False,
    seed: int = 0,
    skip_windows: int = 0,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function`` yielding ``{"ids", "targets"}``.

    ``layout.num_streams`` is the global batch. ``skip_windows`` resumes mid-epoch. ``shuffle_windows``
    (windowed mode without state carry-over) shuffles the window order with a fixed seed.
    """

    def dataset_fn(ctx: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        replicas = ctx.num_replicas_in_sync if ctx else 1
        pipelines = ctx.num_input_pipelines if ctx else 1
        worker = ctx.input_pipeline_id if ctx else 0
        if layout.num_streams % replicas:
            raise ValueError(
                f"batch size {layout.num_streams} is not divisible by the {replicas} replicas in sync"
            )
        per_replica = layout.num_streams // replicas
        local = replicas // pipelines
        inputs, targets = _replica_windows(layout, worker * local * per_replica, per_replica, local)
        order = np.arange(layout.num_windows)
        if shuffle_windows:
            order = np.random.default_rng(seed).permutation(order)
        element_order = (order[:, None] * local + np.arange(local)[None, :]).reshape(-1)
        element_order = element_order[skip_windows * local :]
        ds = tf.data.Dataset.from_tensor_slices({"ids": inputs[element_order], "targets": targets[element_order]})
        return ds.prefetch(tf.data.AUTOTUNE)

    return dataset_fn

