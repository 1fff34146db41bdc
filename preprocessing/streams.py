"""Input that streams from the shards, never holding a split: language-model BPTT windows, example batches.

:func:`preprocessing.input_fns.bptt_layout` lays a split's id stream out as ``B`` contiguous rows of
``L = tokens // B`` ids (the few left over are dropped) and cuts them into windows of ``T`` steps;
row ``b`` is the stream's ids ``[b*L, (b+1)*L)``. :class:`TokenStream` is that layout, read from the
shards with ``tf.data``: each row is its own reader that opens only the shards its segment touches
(the manifest's per-shard token counts say which, and how many ids of the first one to skip), parses
records in batches and cuts its ids into blocks of windows; the rows are zipped window by window.
Nothing holds more than a few blocks per row, so memory does not grow with the corpus, and the
windows — hence the carried state — are exactly those of the in-memory layout.

Resuming at window ``k`` starts every row ``k*T`` ids further on (only the shards from there on are
read). Shards are gzip files, so a reader that starts inside a shard decompresses and parses it from
its beginning up to that point: the prepare job keeps shards small enough (``data.min_shards``,
about a million tokens each) that this costs at most one shard per row.

:class:`ExampleStream` does the same for example records (tagging, classification, seq2seq):
shuffled training batches, and evaluation batches that cover every example of a split once, in
length-sorted windows of consecutive examples, each with its position in corpus order.

The split's shards are checked against the manifest (sha256, size) before anything is read, as for
every reader of prepared data (:func:`preprocessing.manifest.verify_shards`); a stream that ends
before the manifest's token count is an error naming the split, never a shorter epoch.
"""

from __future__ import annotations

import bisect
import os
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from preprocessing import schema
from preprocessing.manifest import (DataError, load_manifest, read_or_explain, rebuild_hint, shard_info, split_paths,
                                    verify_shards)

RECORDS_PER_READ = 256  # serialized records parsed in one call
BLOCK_WINDOWS = 16  # windows a row cuts at a time (per tf.data element)


def _stateless_shuffle(seed: int):
    """``(k, values) -> values`` (a tensor or a tuple) shuffled along the first axis by one permutation drawn
    from ``(seed, k)``: the same on every worker and run, whatever TensorFlow's global seed is."""
    key = tf.constant(seed, tf.int64)

    def shuffle(k, values):
        first = tf.nest.flatten(values)[0]
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(first)[0]), seed=tf.stack([key, k]))
        return tf.nest.map_structure(lambda v: tf.gather(v, order), values)

    return shuffle


class TokenStream:
    """A language-model split laid out as ``num_streams`` rows cut into windows of ``bptt`` steps.

    The same layout as :func:`preprocessing.input_fns.bptt_layout` over
    :func:`~preprocessing.input_fns.lm_token_stream` (same ``num_windows``, ``num_targets``,
    windows), read lazily from the shards.

    Args:
        data_dir: a prepared language-model directory.
        split: ``train``, ``valid`` or ``test``.
        num_streams: rows (the global batch size).
        bptt: steps per window.
        verify: check the split's shards against the manifest first (default).
        manifest: the loaded manifest (read from ``data_dir`` when not given).
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, num_streams: int, bptt: int, *,
                 verify: bool = True, manifest: dict[str, Any] | None = None,
                 records_per_read: int = RECORDS_PER_READ, block_windows: int = BLOCK_WINDOWS):
        manifest = manifest if manifest is not None else load_manifest(data_dir)
        spec = manifest.get("features") or {}
        if dict(spec) != {"ids": schema.SEQUENCE}:
            raise DataError(f"{os.fspath(data_dir)}: a token stream reads language-model shards (features "
                            f"{{'ids': 'sequence'}}), these hold {dict(spec)}")
        if num_streams < 1 or bptt < 1:
            raise ValueError(f"num_streams and bptt must be >= 1, got {num_streams} and {bptt}")
        if verify:
            verify_shards(data_dir, manifest, [split])
        self.data_dir, self.split = os.fspath(data_dir), split
        self.paths = split_paths(data_dir, manifest, split)
        info = shard_info(data_dir, manifest, split)
        counts = [int(info[os.path.basename(p)]["tokens"]) for p in self.paths]
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()  # shard i: [o[i], o[i+1])
        self.tokens = int(manifest["splits"][split]["tokens"])
        if self.offsets[-1] != self.tokens:
            raise DataError(f"{self.data_dir}: split {split!r}: its shards hold {self.offsets[-1]} tokens, the "
                            f"manifest's split records {self.tokens}; {rebuild_hint(data_dir)}")
        self.num_streams, self.bptt = int(num_streams), int(bptt)
        self.row_length = self.tokens // self.num_streams
        if self.row_length < 2:
            raise ValueError(
                f"a stream of {self.tokens} tokens is too short for {num_streams} parallel streams; "
                "use a smaller batch size or more data"
            )
        self.records_per_read, self.block_windows = int(records_per_read), int(block_windows)

    # ----------------------------------------------------------------------- the layout's figures
    @property
    def num_windows(self) -> int:
        """Full windows only (training); ``drop_remainder=False`` adds a last short one."""
        return (self.row_length - 1) // self.bptt

    @property
    def num_targets(self) -> int:
        return self.num_streams * (self.row_length - 1)

    # ------------------------------------------------------------------------------ one row
    def _shards_for(self, start: int, stop: int) -> tuple[int, int, int]:
        """``(first, last, skip)``: shards ``first .. last-1`` hold ids ``[start, stop)`` of the split;
        ``skip`` ids of shard ``first`` come before ``start``."""
        first = bisect.bisect_right(self.offsets, start) - 1
        last = bisect.bisect_left(self.offsets, stop)
        return first, last, start - self.offsets[first]

    def _row_blocks_fn(self):
        """``(first shard, last shard, skip, count) -> blocks`` (one traced function for every row).

        A row's ids are cut into blocks ``(inputs [K, T], targets [K, T], lengths [K])``: window ``j``
        of a block holds ``lengths[j]`` real steps (``T``; fewer for the row's last window; 0 for
        the padding of its last block). Rows of the same ``count`` yield the same number of blocks."""
        k, t = self.block_windows, self.bptt
        block = k * t
        paths = tf.constant(self.paths)
        spec = schema.feature_spec({"ids": schema.SEQUENCE}, batched=True)
        where = f"{self.data_dir}: split {self.split}"
        hint = rebuild_hint(self.data_dir)
        empty = (tf.zeros([0, k, t], tf.int32), tf.zeros([0, k, t], tf.int32), tf.zeros([0, k], tf.int32))

        def cut(buf, n_blocks):
            used = n_blocks * block
            return (tf.reshape(buf[:used], [n_blocks, k, t]), tf.reshape(buf[1 : used + 1], [n_blocks, k, t]),
                    tf.fill([n_blocks, k], tf.constant(t, tf.int32)))

        def last_block(buf):
            # at most K*T ids (+1) are left: pad them to one block; windows past the data have length 0
            size = tf.size(buf)
            padded = tf.concat([buf, tf.zeros([block + 1 - size], tf.int32)], 0)
            lengths = tf.clip_by_value((size - 1) - tf.range(k, dtype=tf.int32) * t, 0, t)
            return (tf.reshape(padded[:block], [1, k, t]), tf.reshape(padded[1:], [1, k, t]),
                    tf.reshape(lengths, [1, k]))

        def step(state, element):
            buf, to_skip, left, done = state
            chunk, end = element
            tf.debugging.assert_equal(tf.logical_and(end, tf.logical_not(done)), False,
                                      message=f"{where}: the shards end before the token count the manifest records; {hint}")
            dropped = tf.minimum(to_skip, tf.size(chunk, tf.int64))
            chunk = chunk[dropped:]
            taken = tf.minimum(left, tf.size(chunk, tf.int64))
            buf = tf.concat([buf, chunk[:taken]], 0)
            to_skip, left = to_skip - dropped, left - taken
            finishing = tf.logical_and(tf.equal(left, 0), tf.logical_not(done))
            # while ids keep coming, cut every block whose last target has arrived
            n_blocks = tf.maximum(tf.size(buf) - 1, 0) // block
            full = tf.cond(done, lambda: empty, lambda: cut(buf, n_blocks))
            buf = buf[n_blocks * block :]
            tail = tf.cond(finishing, lambda: last_block(buf), lambda: empty)
            out = tuple(tf.concat([a, b], 0) for a, b in zip(full, tail))
            return (buf, to_skip, left, tf.logical_or(done, finishing)), out + (done,)

        def row(first, last, skip, count):
            files = tf.data.TFRecordDataset(paths[first:last], compression_type="GZIP", buffer_size=1 << 20)
            chunks = files.batch(self.records_per_read).map(
                lambda s: (tf.cast(tf.io.parse_example(s, spec)["ids"].flat_values, tf.int32), False))
            chunks = chunks.concatenate(tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32), True)))
            initial = (tf.zeros([0], tf.int32), skip, count, tf.constant(False))
            ds = chunks.scan(initial, step)
            ds = ds.take_while(lambda i, o, n, was_done: tf.logical_not(was_done))  # stop reading once full
            return ds.map(lambda i, o, n, _: (i, o, n)).unbatch()

        return row

    # ------------------------------------------------------------------------------ rows
    def dataset(self, first_row: int = 0, num_rows: int | None = None, *, skip_windows: int = 0,
                drop_remainder: bool = True, shuffle_seed: int | None = None,
                shuffle_buffer: int = 10_000) -> tf.data.Dataset:
        """``(inputs [num_rows, T], targets [num_rows, T])`` for every window of rows
        ``[first_row, first_row + num_rows)``, in window order from window ``skip_windows``.

        The rows are read in parallel (one reader each, interleaved block by block in row order).
        ``drop_remainder=False`` adds the last short window (evaluation covers every target).
        ``shuffle_seed`` (training without carried state) shuffles the windows within consecutive
        groups of ``shuffle_buffer`` (a seeded, stateless shuffle: every worker and a resumed run draw
        the same order; ``skip_windows`` then skips shuffled windows).
        """
        num_rows = self.num_streams - first_row if num_rows is None else num_rows
        if not 0 <= first_row < first_row + num_rows <= self.num_streams:
            raise ValueError(f"rows {first_row}..{first_row + num_rows - 1} are outside the layout's "
                             f"{self.num_streams} rows")
        t, shuffled = self.bptt, shuffle_seed is not None
        offset = 0 if shuffled else skip_windows * t
        if offset >= self.row_length - 1:
            return self._empty()
        count = self.row_length - offset
        params = np.array([(*self._shards_for(b * self.row_length + offset, b * self.row_length + offset + count),
                            count) for b in range(first_row, first_row + num_rows)], np.int64)
        rows = tf.data.Dataset.from_tensor_slices(tuple(params.T)).interleave(
            self._row_blocks_fn(), cycle_length=num_rows, block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # every row yields the same blocks: batching num_rows consecutive ones stacks block k of each row
        ds = rows.batch(num_rows, drop_remainder=True).map(
            lambda i, o, n: (tf.transpose(i, [1, 0, 2]), tf.transpose(o, [1, 0, 2]), n[0])).unbatch()
        if drop_remainder:
            ds = ds.filter(lambda i, o, length: tf.equal(length, t)).map(
                lambda i, o, _: (tf.ensure_shape(i, [num_rows, t]), tf.ensure_shape(o, [num_rows, t])))
        else:
            ds = ds.filter(lambda i, o, length: length > 0).map(lambda i, o, n: (i[:, :n], o[:, :n]))
        if shuffled:
            ds = ds.batch(shuffle_buffer).enumerate().map(_stateless_shuffle(shuffle_seed)).unbatch().skip(skip_windows)
        return ds

    def _empty(self) -> tf.data.Dataset:
        z = tf.zeros([0, 0, self.bptt], tf.int32)
        return tf.data.Dataset.from_tensor_slices((z, z))

    def windows(self, rows: slice = slice(None), drop_remainder: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields ``(inputs, targets)`` windows ``[rows, <=bptt]`` as numpy, as ``BPTTLayout.windows`` does."""
        first, stop, step = rows.indices(self.num_streams)
        if step != 1:
            raise ValueError("rows must be a contiguous slice")
        yield from self.dataset(first, stop - first, drop_remainder=drop_remainder).prefetch(2).as_numpy_iterator()

    def head(self, num_rows: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``steps`` inputs and targets of the first ``num_rows`` rows (diagnostics, plots)."""
        num_rows, steps = min(num_rows, self.num_streams), min(steps, self.row_length - 1)
        parts = [w for _, w in zip(range(-(-steps // self.bptt)), self.windows(slice(0, num_rows), False))]
        inputs = np.concatenate([p[0] for p in parts], axis=1)[:, :steps]
        targets = np.concatenate([p[1] for p in parts], axis=1)[:, :steps]
        return inputs, targets


# ------------------------------------------------------------------------ example records (not LM)
SHUFFLE_BUFFER = 10_000  # training.shuffle_buffer's default
FILE_CYCLE = 8  # shards read at once (interleaved)
EVAL_SORT_WINDOW = 32  # evaluation: batches' worth of consecutive examples sorted by length at a time


def _bucket_sizes(limit: int = 1 << 20) -> tf.Tensor:
    """:func:`preprocessing.input_fns.bucket_length`'s sizes, for lookups in a graph."""
    from preprocessing.input_fns import bucket_length

    sizes, n = [], 1
    while n <= limit:
        sizes.append(bucket_length(n))
        n = sizes[-1] + 1
    return tf.constant(sizes, tf.int32)


def _bucket(length, sizes):
    """The padded width of a batch whose longest row has ``length`` ids (``bucket_length`` in TF)."""
    return tf.gather(sizes, tf.searchsorted(sizes, tf.reshape(tf.maximum(length, 1), [1]), side="left"))[0]


class ExampleStream:
    """A tagging, classification or seq2seq split read from its shards, as training batches.

    :meth:`dataset_fn` gives what :func:`preprocessing.input_fns.example_dataset_fn` gives for
    in-memory :class:`~preprocessing.input_fns.Examples` — shuffled, length-grouped global batches
    of exactly ``batch_size`` examples, padded like :func:`~preprocessing.input_fns.pad_batch` —
    without holding the split: shards are read ``FILE_CYCLE`` at a time in a seeded order,
    interleaved, shuffled within a bounded buffer of ``shuffle_buffer`` examples (a seeded,
    stateless shuffle: every worker and a resumed run draw the same order whatever TensorFlow's
    global seed is), then cut into windows of ``sort_window`` batches that are sorted by length,
    cut into batches and shuffled among themselves. Every worker draws the same global batches and
    keeps its replicas' rows, so N replicas take the steps of one.

    The shuffle is local: an example moves within its buffer and its shard's place in the file
    order. Corpora stored in sorted order (by label, by length) should be prepared with a hashed
    split and several shards, which the prepare job writes by default.

    :meth:`eval_batches` is the evaluation input (valid / test scoring, ``rnnflow evaluate``): every
    example exactly once, shards read in corpus order, windows of ``eval_window`` (default 32)
    batches' worth of consecutive examples sorted by length and cut into batches padded like ``pad_batch``, each
    example with its corpus position. Memory is bounded by the window, never the split.
    :meth:`head` reads the first few examples into memory (samples).
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, with_chars: bool = False, *, verify: bool = True,
                 manifest: dict[str, Any] | None = None, eval_window: int = EVAL_SORT_WINDOW):
        from preprocessing.input_fns import features_of

        manifest = manifest if manifest is not None else load_manifest(data_dir)
        self.spec = features_of(manifest, data_dir)
        if "ids" not in self.spec and "source_ids" not in self.spec:
            raise ValueError(f"{os.fspath(data_dir)}: an example stream reads example records (ids or source_ids), "
                             f"not {sorted(self.spec)}")
        if with_chars and "chars" not in self.spec:
            raise ValueError(f"{os.fspath(data_dir)}: the data has no character ids; prepare it with "
                             "data.char_features: true")
        if verify:
            verify_shards(data_dir, manifest, [split])
        self.data_dir, self.split, self.with_chars = os.fspath(data_dir), split, with_chars
        self.task = manifest["task"]
        self.paths = split_paths(data_dir, manifest, split)
        self.examples = int(manifest["splits"][split]["examples"])
        if eval_window < 1:
            raise ValueError(f"eval_window must be >= 1, got {eval_window}")
        self.eval_window = int(eval_window)  # evaluation: batches' worth of examples sorted at a time
        self._eval_datasets: dict[tuple, tf.data.Dataset] = {}

    def __len__(self) -> int:
        return self.examples

    @staticmethod
    def _records(paths: list[str], cycle_length: int) -> tf.data.Dataset:
        """The serialized records of the shards ``paths``: ``cycle_length`` of them read at once and
        interleaved record by record; with 1, one after the other (corpus order when ``paths`` are
        in file-name order) while the next one is opened and read ahead."""
        files = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), tf.string))
        return files.interleave(
            lambda p: tf.data.TFRecordDataset(p, compression_type="GZIP", buffer_size=1 << 20),
            cycle_length=max(1, min(cycle_length, len(paths))), block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _parse(self, serialized) -> dict[str, Any]:
        """A batch of records → ragged ``ids`` / ``tags`` / ``chars [n, (tokens), (chars)]`` /
        ``targets``, dense ``label`` (the fields of :class:`~preprocessing.input_fns.Examples`)."""
        parsed = schema.parse_example(self.spec, serialized)
        pairs = "source_ids" in self.spec
        out = {"ids": tf.cast(parsed["source_ids" if pairs else "ids"], tf.int32)}
        if pairs:
            out["targets"] = tf.cast(parsed["target_ids"], tf.int32)
        if "tags" in self.spec:
            out["tags"] = tf.cast(parsed["tags"], tf.int32)
        if "label" in self.spec:
            out["label"] = tf.cast(parsed["label"], tf.int32)
        if self.with_chars:
            lengths = parsed["char_lengths"]
            words = tf.RaggedTensor.from_row_lengths(tf.cast(parsed["chars"].flat_values, tf.int32),
                                                     tf.cast(lengths.flat_values, tf.int64))
            out["chars"] = tf.RaggedTensor.from_row_lengths(words, tf.cast(lengths.row_lengths(), tf.int64))
        return out

    def _pad(self, batch: dict[str, Any], sizes, max_length: int | None, max_chars: int | None) -> dict[str, tf.Tensor]:
        """:func:`~preprocessing.input_fns.pad_batch` of a ragged batch, in TensorFlow."""
        from preprocessing.vocab import BOS_ID, EOS_ID

        ids = batch["ids"] if max_length is None else batch["ids"][:, :max_length]
        width = _bucket(tf.cast(tf.reduce_max(ids.row_lengths()), tf.int32), sizes)
        if max_length:
            width = tf.minimum(width, max_length)
        n = tf.shape(batch["ids"].row_lengths())[0]
        out = {"ids": ids.to_tensor(0, shape=[n, width])}
        if "tags" in batch:
            tags = batch["tags"] if max_length is None else batch["tags"][:, :max_length]
            out["tags"] = tags.to_tensor(0, shape=[n, width])
            if "chars" in batch:
                chars = batch["chars"] if max_length is None else batch["chars"][:, :max_length]
                if max_chars:
                    chars, depth = chars[:, :, :max_chars], tf.constant(max_chars, tf.int32)
                else:
                    depth = _bucket(tf.cast(tf.reduce_max(chars.values.row_lengths()), tf.int32), sizes)
                out["chars"] = chars.to_tensor(0, shape=[n, width, depth])
        elif "targets" in batch:
            # decoder input <bos> y, decoder target y <eos> (as pad_batch)
            eos = tf.fill([n, 1], tf.constant(EOS_ID, tf.int32))
            outs = tf.concat([batch["targets"], eos], axis=1)
            u = _bucket(tf.cast(tf.reduce_max(outs.row_lengths()), tf.int32), sizes)
            bos = tf.fill([n, 1], tf.constant(BOS_ID, tf.int32))
            target_in = tf.concat([bos, outs[:, :-1]], axis=1)
            out = {"source_ids": out["ids"], "target_in": target_in.to_tensor(0, shape=[n, u]),
                   "target_out": outs.to_tensor(0, shape=[n, u])}
        else:
            out["label"] = batch["label"]
        return out

    def batches(self, batch_size: int, *, seed: int, skip_batches: int = 0, max_length: int | None = None,
                max_chars: int | None = None, sort_window: int = 32,
                shuffle_buffer: int = SHUFFLE_BUFFER) -> tf.data.Dataset:
        """The epoch's global training batches (padded dicts), from batch ``skip_batches``; the last
        partial batch is dropped, so there are ``len(self) // batch_size``."""
        sizes = _bucket_sizes()
        order = np.random.default_rng(seed).permutation(len(self.paths))
        records = self._records([self.paths[i] for i in order], FILE_CYCLE)
        key = tf.constant(seed, tf.int64)
        records = records.batch(shuffle_buffer).enumerate().map(_stateless_shuffle(seed)).unbatch()
        window = batch_size * sort_window

        def sorted_batches(k, serialized):
            # the window's examples (a partial last window keeps whole batches only), sorted by length
            keep = (tf.shape(serialized)[0] // batch_size) * batch_size
            ex = self._parse(serialized[:keep])
            lengths = ex["ids"].row_lengths()
            if max_length is not None:
                lengths = tf.minimum(lengths, max_length)
            by_length = tf.argsort(lengths, stable=True)
            shuffled = tf.random.experimental.stateless_shuffle(tf.range(keep // batch_size),
                                                                seed=tf.stack([key + 1, k]))
            out = {}
            for name, value in ex.items():
                value = tf.gather(value, by_length)
                value = (tf.RaggedTensor.from_uniform_row_length(value, batch_size) if isinstance(value, tf.RaggedTensor)
                         else tf.reshape(value, [-1, batch_size]))
                out[name] = tf.gather(value, shuffled)
            return tf.data.Dataset.from_tensor_slices(out)

        ds = records.batch(window).enumerate().flat_map(sorted_batches).skip(skip_batches)
        return ds.map(lambda b: self._pad(b, sizes, max_length, max_chars), num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True)

    def dataset_fn(self, global_batch_size: int, *, seed: int, skip_batches: int = 0, max_length: int | None = None,
                   max_chars: int | None = None, sort_window: int = 32, shuffle_buffer: int = SHUFFLE_BUFFER):
        """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``: :meth:`batches`, each
        worker keeping the rows of its replicas (replica ``r``: rows ``[r*b, (r+1)*b)``)."""

        from preprocessing.input_fns import replica_share

        def dataset_fn(ctx: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
            worker, local, per_replica = replica_share(ctx, global_batch_size)
            first = worker * local * per_replica
            ds = self.batches(global_batch_size, seed=seed, skip_batches=skip_batches, max_length=max_length,
                              max_chars=max_chars, sort_window=sort_window, shuffle_buffer=shuffle_buffer)
            ds = ds.map(lambda b: {k: tf.reshape(v[first : first + local * per_replica],
                                                 tf.concat([[local, per_replica], tf.shape(v)[1:]], 0))
                                   for k, v in b.items()}).unbatch()
            return ds.prefetch(tf.data.AUTOTUNE)

        return dataset_fn

    # ------------------------------------------------------------------------------ evaluation
    def eval_windows(self, window: int) -> tf.data.Dataset:
        """``(first position, serialized records)``: the split in corpus order (shard order, record
        order) cut into consecutive windows of ``window`` records, the last one shorter. This is all
        of the split that :meth:`eval_dataset` holds at a time."""
        return self._records(self.paths, 1).batch(window).enumerate().map(lambda k, records: (k * window, records))

    def eval_dataset(self, batch_size: int, max_chars: int | None = None, *,
                     sort_window: int | None = None) -> tf.data.Dataset:
        """``(positions [b], lengths [b], batch)`` over every example of the split, exactly once.

        Windows of ``sort_window`` (default :attr:`eval_window`) batches' worth of consecutive
        examples (:meth:`eval_windows`) are sorted by length (stable) and cut into batches of
        ``batch_size`` (a window's last batch may be smaller); nothing is shuffled, cut (no ``max_length``) or dropped. ``batch`` is padded as
        :func:`~preprocessing.input_fns.pad_batch` pads it (``max_chars`` characters per token when
        given); ``positions`` are the examples' ranks in corpus order and ``lengths`` their lengths in
        ids (source ids for pairs), since an id 0 can be a real token (a corpus ``<pad>``). Batches
        come window by window, so the positions of one window's batches are a block
        ``[k*W, (k+1)*W)``, ``W = batch_size * sort_window``.
        """
        sort_window = self.eval_window if sort_window is None else sort_window
        if batch_size < 1 or sort_window < 1:
            raise ValueError(f"batch_size and sort_window must be >= 1, got {batch_size} and {sort_window}")
        key = (batch_size, max_chars, sort_window)
        if key in self._eval_datasets:  # per-epoch validation builds (and traces) it once
            return self._eval_datasets[key]
        sizes = _bucket_sizes()
        size = tf.constant(batch_size, tf.int64)

        def sorted_batches(start, serialized):
            ex = self._parse(serialized)
            lengths = tf.cast(ex["ids"].row_lengths(), tf.int64)
            n = tf.shape(lengths, out_type=tf.int64)[0]
            by_length = tf.argsort(lengths, stable=True)
            rows = tf.minimum(size, n - tf.range(0, n, size))  # batch sizes: b, b, ..., the rest
            cut = {"positions": start + tf.cast(by_length, tf.int64), "lengths": tf.gather(lengths, by_length)}
            cut.update({name: tf.gather(value, by_length) for name, value in ex.items()})
            return tf.data.Dataset.from_tensor_slices({
                name: tf.RaggedTensor.from_row_lengths(
                    value, tf.cast(rows, value.row_splits.dtype) if isinstance(value, tf.RaggedTensor) else rows)
                for name, value in cut.items()})

        def pad(b):
            fields = {k: v for k, v in b.items() if k not in ("positions", "lengths")}
            return b["positions"], b["lengths"], self._pad(fields, sizes, None, max_chars)

        ds = self.eval_windows(batch_size * sort_window).flat_map(sorted_batches)
        ds = ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
        self._eval_datasets[key] = ds
        return ds

    def eval_batches(self, batch_size: int, max_chars: int | None = None, *,
                     sort_window: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        """Yields :meth:`eval_dataset`'s ``(positions, lengths, batch)`` as NumPy: what the evaluators of
        :mod:`keras_models.evaluation` read. A read error is a :class:`DataError` naming the split, and
        so is a split whose shards hold fewer or more examples than the manifest records."""
        where = f"{self.data_dir}: split {self.split!r}"
        it = self.eval_dataset(batch_size, max_chars, sort_window=sort_window).as_numpy_iterator()
        seen = 0
        for positions, lengths, batch in read_or_explain(it, f"{where}: cannot read its shards", self.data_dir):
            seen += len(positions)
            yield positions, lengths, batch
        if seen != self.examples:
            raise DataError(f"{where}: read {seen} examples, the manifest records {self.examples}: the data does "
                            f"not match its manifest; {rebuild_hint(self.data_dir)}")

    def head(self, n: int):
        """The first ``n`` examples in corpus order, in memory
        (:class:`~preprocessing.input_fns.Examples`): samples and printable examples for reports."""
        from preprocessing.input_fns import Examples

        fields: dict[str, list] = {}
        if n > 0:
            for serialized in self._records(self.paths, 1).take(n).batch(n):
                for name, value in self._parse(serialized).items():
                    fields.setdefault(name, []).extend(value.to_list() if isinstance(value, tf.RaggedTensor)
                                                       else value.numpy().tolist())

        def arrays(rows):
            return [np.asarray(r, np.int32) for r in rows]

        ids = arrays(fields.get("ids", []))
        return Examples(
            task=self.task, ids=ids,
            tags=arrays(fields.get("tags", [])) if "tags" in self.spec else None,
            labels=np.asarray(fields.get("label", []), np.int32) if "label" in self.spec else None,
            chars=[arrays(words) for words in fields.get("chars", [])] if self.with_chars else None,
            targets=arrays(fields.get("targets", [])) if "source_ids" in self.spec else None,
        )
