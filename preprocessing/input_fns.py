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

Training and evaluation read the shards as they go (:mod:`preprocessing.streams`: ``TokenStream``
for language models, ``ExampleStream`` for example records); the in-memory readers here
(:func:`lm_token_stream`, :func:`load_examples`) serve tests and small tools, and the in-memory
:class:`BPTTLayout`, :func:`pad_batch` and :func:`eval_batches` are the references the streams are
tested against.

Prepared data is verified, not trusted: every reader here first checks the shards of the split it
reads against the manifest's sha256 and sizes (:func:`preprocessing.manifest.verify_shards`),
:func:`iter_split` (behind :func:`lm_token_stream` and :func:`load_examples`) reads one shard at a
time, turns a read error into a :class:`DataError` naming the file, and checks the examples and
tokens it read against the manifest's counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.manifest import DataError, load_manifest, read_or_explain, rebuild_hint, split_paths, verify_shards
from preprocessing.vocab import BOS_ID, EOS_ID


def features_of(manifest: Any, data_dir) -> dict[str, str]:
    """The feature spec the shards were written with (the manifest's ``features``)."""
    spec = manifest.get("features")
    if not spec:
        raise DataError(f"{os.fspath(data_dir)}: the manifest records no feature spec (prepared by an older "
                        f"rnnflow); {rebuild_hint(data_dir)}")
    return schema.check_spec(spec)


def read_split(data_dir: str | os.PathLike, split: str, *, verify: bool = True) -> tf.data.Dataset:
    """The split's examples in corpus order, parsed with the manifest's feature spec.

    ``verify`` (default) first checks the split's shards against the manifest (DataError naming the
    file). Errors while iterating the returned dataset are TensorFlow's; :func:`iter_split` names the file.
    """
    manifest = load_manifest(data_dir)
    spec = features_of(manifest, data_dir)
    if verify:
        verify_shards(data_dir, manifest, [split])
    paths = split_paths(data_dir, manifest, split)
    ds = tf.data.TFRecordDataset(paths, compression_type="GZIP")  # sequential: keeps file order
    return ds.map(lambda s: schema.parse_example(spec, s), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _read_shard(path: str, spec: dict[str, str], data_dir) -> Iterator[dict[str, np.ndarray]]:
    """One shard's parsed examples; a TensorFlow read error becomes a DataError naming the file."""
    ds = tf.data.TFRecordDataset(path, compression_type="GZIP").map(
        lambda s: schema.parse_example(spec, s), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    yield from read_or_explain(ds.as_numpy_iterator(), f"{path}: cannot read this shard", data_dir)


def _count_mismatch(where: str, what: str, found: int, expected: int, data_dir) -> DataError:
    return DataError(f"{where}: read {found} {what}, the manifest records {expected}: the data does not match "
                     f"its manifest; {rebuild_hint(data_dir)}")


def iter_split(data_dir: str | os.PathLike, split: str, *, verify: bool = True,
               manifest: dict[str, Any] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yields the split's parsed examples in corpus order (numpy), checked against the manifest.

    With ``verify`` (default) the split's shards are hashed first (:func:`verify_shards`). Reading goes
    shard by shard: a read error (``DataLossError`` from a truncated or corrupt file, ...) is a
    :class:`DataError` naming the file, and so is a shard whose examples or tokens (ids, as counted by
    :func:`preprocessing.schema.example_length`) differ from the manifest's, or a split whose totals do.
    """
    manifest = manifest if manifest is not None else load_manifest(data_dir)
    spec = features_of(manifest, data_dir)
    if verify:
        verify_shards(data_dir, manifest, [split])
    paths = split_paths(data_dir, manifest, split)
    recorded = manifest["splits"][split]
    info = recorded.get("shard_info") or {}
    examples = tokens = 0
    for path in paths:
        n = t = 0
        for ex in _read_shard(path, spec, data_dir):
            n += 1
            t += schema.example_length(ex)
            yield ex
        expected = info.get(os.path.basename(path))
        if expected is not None:
            for what, found in (("examples", n), ("tokens", t)):
                if found != expected[what]:
                    raise _count_mismatch(path, what, found, expected[what], data_dir)
        examples, tokens = examples + n, tokens + t
    where = f"{os.fspath(data_dir)}: split {split!r}"
    for what, found in (("examples", examples), ("tokens", tokens)):
        if found != recorded[what]:
            raise _count_mismatch(where, what, found, recorded[what], data_dir)


def lm_token_stream(data_dir: str | os.PathLike, split: str, *, verify: bool = True) -> np.ndarray:
    """All ids of a language-model split, concatenated in corpus order (each line ends with ``<eos>``);
    verified and counted by :func:`iter_split`."""
    chunks = [ex["ids"] for ex in iter_split(data_dir, split, verify=verify)]
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

    def dataset(self, first_row: int = 0, num_rows: int | None = None, *, skip_windows: int = 0,
                drop_remainder: bool = True, shuffle_seed: int | None = None,
                shuffle_buffer: int | None = None) -> tf.data.Dataset:
        """``(inputs [num_rows, T], targets [num_rows, T])`` for the full windows of rows
        ``[first_row, first_row + num_rows)`` from window ``skip_windows``; ``shuffle_seed``: the
        windows in a permutation drawn from it (then skipped; the whole layout is permuted, so
        ``shuffle_buffer`` is not used). The in-memory twin of
        :meth:`preprocessing.streams.TokenStream.dataset`."""
        if not drop_remainder:
            raise ValueError("an in-memory layout's dataset holds full windows only; use windows() to score")
        num_rows = self.num_streams - first_row if num_rows is None else num_rows
        rows = slice(first_row, first_row + num_rows)
        t, n = self.bptt, self.num_windows
        inputs = self.inputs[rows, : n * t].reshape(num_rows, n, t).transpose(1, 0, 2)
        targets = self.targets[rows, : n * t].reshape(num_rows, n, t).transpose(1, 0, 2)
        order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
        order = order[skip_windows:]
        return tf.data.Dataset.from_tensor_slices((np.ascontiguousarray(inputs[order]),
                                                   np.ascontiguousarray(targets[order])))

    def head(self, num_rows: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``steps`` inputs and targets of the first ``num_rows`` rows (diagnostics, plots)."""
        return self.inputs[:num_rows, :steps], self.targets[:num_rows, :steps]


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


def replica_share(ctx: tf.distribute.InputContext | None, global_batch_size: int) -> tuple[int, int, int]:
    """``(worker, local replicas, rows per replica)`` of a ``dataset_fn``'s input context: worker ``w``
    feeds its ``local`` replicas, replica ``r`` (global id) takes rows ``[r*b, (r+1)*b)`` of each global batch."""
    replicas = ctx.num_replicas_in_sync if ctx else 1
    pipelines = ctx.num_input_pipelines if ctx else 1
    worker = ctx.input_pipeline_id if ctx else 0
    if global_batch_size % replicas:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the {replicas} replicas in sync")
    return worker, replicas // pipelines, global_batch_size // replicas


def bptt_dataset_fn(
    layout,
    *,
    shuffle_windows: bool = False,
    seed: int = 0,
    skip_windows: int = 0,
    shuffle_buffer: int = 10_000,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function`` yielding ``{"ids", "targets"}``.

    ``layout``: a :class:`BPTTLayout` (in memory) or a :class:`preprocessing.streams.TokenStream`
    (read from the shards); ``layout.num_streams`` is the global batch. Worker ``w`` reads only its
    own block of rows and emits, for each window, one element per local replica in replica order.
    ``skip_windows`` resumes mid-epoch. ``shuffle_windows`` (windowed mode without state carry-over)
    shuffles the window order with ``seed`` (every worker draws the same order).
    """

    def dataset_fn(ctx: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        worker, local, per_replica = replica_share(ctx, layout.num_streams)
        t = layout.bptt
        ds = layout.dataset(worker * local * per_replica, local * per_replica, skip_windows=skip_windows,
                            shuffle_seed=seed if shuffle_windows else None, shuffle_buffer=shuffle_buffer)
        ds = ds.map(lambda i, o: {"ids": tf.reshape(i, [local, per_replica, t]),
                                  "targets": tf.reshape(o, [local, per_replica, t])}).unbatch()
        return ds.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


# --------------------------------------------------------------------- example records (not LM streams)
@dataclass
class Examples:
    """A tagging, classification or seq2seq split in memory, in corpus order.

    ``ids[i]`` are the token ids of example ``i`` (seq2seq: its source ids); ``tags[i]`` its tag ids
    (tagging), ``labels[i]`` its label id (classification) or ``targets[i]`` its target ids without
    ``<bos>``/``<eos>`` (seq2seq); ``chars[i]`` (tagging with character features) a list of
    character-id arrays, one per token. ``task`` names the task that prepared them (for messages);
    batching (:func:`pad_batch`) follows the fields that are set, so a new task whose examples have
    these shapes needs nothing here.
    """

    task: str
    ids: list[np.ndarray]
    tags: list[np.ndarray] | None = None
    labels: np.ndarray | None = None
    chars: list[list[np.ndarray]] | None = None
    targets: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)

    def dataset_fn(self, global_batch_size: int, *, seed: int, skip_batches: int = 0, max_length: int | None = None,
                   max_chars: int | None = None, sort_window: int = 32, shuffle_buffer: int | None = None):
        """:func:`example_dataset_fn` of these examples (a full permutation: ``shuffle_buffer`` is
        for :class:`preprocessing.streams.ExampleStream`, which has the same method)."""
        return example_dataset_fn(self, global_batch_size, seed=seed, skip_batches=skip_batches, max_length=max_length,
                                  max_chars=max_chars, sort_window=sort_window)


def load_examples(data_dir: str | os.PathLike, split: str, with_chars: bool = False, *,
                  verify: bool = True) -> Examples:
    """Reads a split of example records into memory (corpus order); verified and counted by
    :func:`iter_split`. What the examples hold follows the manifest's feature spec: ``ids`` (or
    ``source_ids`` and ``target_ids`` for pairs), ``tags`` (one per token), ``label`` (one per
    example), and with ``with_chars`` the ``chars`` / ``char_lengths`` of every token."""
    manifest = load_manifest(data_dir)
    spec = features_of(manifest, data_dir)
    task = manifest["task"]
    if "ids" not in spec and "source_ids" not in spec:
        raise ValueError(f"{data_dir}: load_examples reads example records (ids or source_ids), not {sorted(spec)}")
    if with_chars and "chars" not in spec:
        raise ValueError(
            f"{data_dir}: the data has no character ids; prepare it with data.char_features: true"
        )
    pairs = "source_ids" in spec
    ids, tags, labels, chars, targets = [], [], [], [], []
    for ex in iter_split(data_dir, split, verify=verify, manifest=manifest):
        ids.append(ex["source_ids" if pairs else "ids"].astype(np.int32))
        if pairs:
            targets.append(ex["target_ids"].astype(np.int32))
        if "tags" in spec:
            tags.append(ex["tags"].astype(np.int32))
        if "label" in spec:
            labels.append(int(ex["label"]))
        if with_chars:
            bounds = np.concatenate([[0], np.cumsum(ex["char_lengths"])])
            flat = ex["chars"].astype(np.int32)
            chars.append([flat[bounds[k] : bounds[k + 1]] for k in range(len(bounds) - 1)])
    return Examples(
        task=task, ids=ids, tags=tags if "tags" in spec else None,
        labels=np.array(labels, np.int32) if "label" in spec else None,
        chars=chars if with_chars else None, targets=targets if pairs else None,
    )


def batch_indices(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    sort_window: int = 32,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
    """Groups example indices into batches of similar length (less padding).

    Without ``shuffle``: examples sorted by length (stable), cut into batches (evaluation). With
    ``shuffle``: a permutation drawn from ``seed``, cut into windows of ``sort_window`` batches,
    each window sorted by length and cut into batches, and the batch order shuffled again, so
    batches are random but hold similar lengths. ``drop_remainder`` drops the last partial batch
    (training: every batch has exactly ``batch_size`` examples, ``len(lengths) // batch_size`` batches).
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        if drop_remainder:
            perm = perm[: (n // batch_size) * batch_size]
        window = batch_size * sort_window
        batches = []
        for start in range(0, len(perm), window):
            chunk = perm[start : start + window]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if drop_remainder:
        batches = [b for b in batches if len(b) == batch_size]
    return batches


def bucket_length(length: int) -> int:
    """The padded length of a batch whose longest example has ``length`` tokens: the smallest of
    8, 16, 24, 32, 48, 64, 96, 128, 192, ... (steps of x1.5 / x1.33) that holds it.

    Padding to a few fixed lengths keeps the number of distinct batch shapes small, so an XLA-compiled
    step compiles a handful of times instead of once per batch.
    """
    for size in (8, 16, 24, 32):
        if length <= size:
            return size
    power = 32
    while True:  # 48, 64, 96, 128, 192, 256, ...: powers of two and 1.5 times them
        if length <= power * 3 // 2:
            return power * 3 // 2
        power *= 2
        if length <= power:
            return power


def pad_batch(examples: Examples, indices, max_length: int | None = None, max_chars: int | None = None) -> dict:
    """Right-padded int32 arrays for the examples at ``indices``: ``ids [B, T]`` (0 = padding),
    ``tags [B, T]`` or ``label [B]``, and ``chars [B, T, C]`` when the examples have characters.
    ``T`` is :func:`bucket_length` of the longest example (``C``: ``max_chars`` when given).
    ``max_length`` cuts longer examples (their first tokens are kept), ``max_chars`` longer tokens."""
    rows = [examples.ids[i][:max_length] for i in indices]
    t = bucket_length(max((len(r) for r in rows), default=1))
    if max_length:
        t = min(t, max_length)
    ids = np.zeros((len(rows), t), np.int32)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = r
    batch = {"ids": ids}
    if examples.tags is not None:
        tags = np.zeros_like(ids)
        for k, i in enumerate(indices):
            row = examples.tags[i][:max_length]
            tags[k, : len(row)] = row
        batch["tags"] = tags
        if examples.chars is not None:
            words = [[w[:max_chars] for w in examples.chars[i][:max_length]] for i in indices]
            c = max_chars or bucket_length(max((len(w) for ws in words for w in ws), default=1))
            chars = np.zeros((len(rows), t, c), np.int32)
            for k, ws in enumerate(words):
                for j, w in enumerate(ws):
                    chars[k, j, : len(w)] = w
            batch["chars"] = chars
    elif examples.targets is not None:
        # decoder input: <bos> y; decoder target: y <eos> (defined here, once, for training and scoring)
        outs = [np.concatenate([examples.targets[i], [EOS_ID]]) for i in indices]
        u = bucket_length(max(len(o) for o in outs))
        target_in = np.zeros((len(outs), u), np.int32)
        target_out = np.zeros((len(outs), u), np.int32)
        for k, o in enumerate(outs):
            target_out[k, : len(o)] = o
            target_in[k, 0] = BOS_ID
            target_in[k, 1 : len(o)] = o[:-1]
        batch = {"source_ids": batch["ids"], "target_in": target_in, "target_out": target_out}
    else:
        batch["label"] = examples.labels[np.asarray(indices, dtype=np.int64)].astype(np.int32)
    return batch


def _signature(examples: Examples) -> dict[str, tf.TensorSpec]:
    if examples.targets is not None:
        return {k: tf.TensorSpec([None, None], tf.int32) for k in ("source_ids", "target_in", "target_out")}
    spec = {"ids": tf.TensorSpec([None, None], tf.int32)}
    if examples.tags is not None:
        spec["tags"] = tf.TensorSpec([None, None], tf.int32)
        if examples.chars is not None:
            spec["chars"] = tf.TensorSpec([None, None, None], tf.int32)
    else:
        spec["label"] = tf.TensorSpec([None], tf.int32)
    return spec


def example_dataset_fn(
    examples: Examples,
    global_batch_size: int,
    *,
    seed: int,
    skip_batches: int = 0,
    max_length: int | None = None,
    max_chars: int | None = None,
    sort_window: int = 32,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``: shuffled, length-grouped
    training batches (:func:`batch_indices` with ``seed``, the last partial batch dropped).

    Every worker draws the same global batches; replica ``r`` gets rows ``[r*b, (r+1)*b)`` of each
    (``b`` = global batch / replicas), so a run on N replicas takes the same steps as on one.
    ``skip_batches`` resumes mid-epoch.
    """
    batches = batch_indices(examples.lengths if max_length is None else np.minimum(examples.lengths, max_length),
                            global_batch_size, shuffle=True, seed=seed, sort_window=sort_window,
                            drop_remainder=True)[skip_batches:]

    def dataset_fn(ctx: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        worker, local, per_replica = replica_share(ctx, global_batch_size)

        def generate():
            for indices in batches:
                for j in range(local):
                    start = (worker * local + j) * per_replica
                    yield pad_batch(examples, indices[start : start + per_replica], max_length, max_chars)

        ds = tf.data.Dataset.from_generator(generate, output_signature=_signature(examples))
        return ds.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def eval_batches(examples: Examples, batch_size: int, max_chars: int | None = None):
    """Yields ``(indices, batch)`` over every example (sorted by length; nothing cut or dropped)."""
    for indices in batch_indices(examples.lengths, batch_size, shuffle=False):
        yield indices, pad_batch(examples, indices, None, max_chars)
