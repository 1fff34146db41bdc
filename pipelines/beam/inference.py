"""Batch scoring in Beam: lines of text through an exported rnnflow model with ``RunInference``.

Steps (wired by :mod:`pipelines.predict`)::

    ReadCorpus (pipelines.beam.corpus: every line, sha256 checked) → DecodeLines ─┬─ lines → RunInference
      (ExportModelHandler: the model loaded once per worker process, lines batched by BatchElements)
      → WritePredictions (sharded JSONL) ─┐
                                          ├─ WriteJobSummary (last, fed by every file writer)
      rejected (invalid UTF-8, empty) ────┴─ WriteRejected (pipelines.beam.rejects)

Element shapes (plain dicts, as in the prepare job, see :mod:`pipelines.beam`): a corpus record from
``ReadCorpus``; a line ``{"index": (source_position, line_number), "source", "line", "text": str}``;
a rejected record (:func:`~pipelines.beam.rejects.reject`: reasons ``invalid_utf8`` and ``empty``, the
latter for empty and whitespace-only lines); ``RunInference``'s ``PredictionResult(example=line,
inference=prediction, model_id=model uri)``.

A prediction is the export's outputs for one line as JSON values, whatever the task: every output
the model returns (its signature), keys sorted, strings decoded, numbers as Python numbers (a float32
written with the fewest digits that read back as the same float32), and per-token outputs cut to
the line's own tokens where the model returns a ``length`` (a tagger's ``tokens`` and ``tags``):
language model ``log_prob``, ``num_tokens``, ``perplexity``; tagger ``tokens``, ``tags``, ``length``;
classifier ``label``, ``probabilities`` (in the order of the model's labels); encoder-decoder
``output``, ``hypotheses``, ``scores``. So no step here knows a task.

Models. :class:`ExportModelHandler` holds only the model's URI (pinned by the launcher: ``models:/NAME/VERSION``,
never an alias, so that every worker loads the same version) and the tracking URI. Each worker
process loads it once (:func:`load_predictor`, a per-process cache, which also serves the launcher's own
check of the model on the in-process runner) through rnnflow's safe loader (:mod:`keras_models.saving`
via :mod:`pipelines.tracking`: rnnflow's classes only, no code from the artifact) and calls it through
one ``tf.function`` with a ``[None]`` string signature (traced once, any batch size).

Runners. The job runs on every runner of :mod:`pipelines.beam.runners`. Beam's ``RunInference``
batches with ``beam.BatchElements``, which emits each bundle's last batch from ``finish_bundle``:
rnnflow's DaskRunner keeps such outputs (:mod:`pipelines.beam.dask_runner`), and the launcher checks
that every line read came out as a prediction or a rejection. ``RunInference`` is given a clock
object (:class:`Clock`) instead of its default, the ``time`` module, which the DaskRunner's per-partition
copy of the DoFn (``copy.deepcopy``) cannot copy.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from pipelines.beam.files import write_bytes_atomic
from pipelines.beam.names import NAMESPACE
from pipelines.beam.rejects import EMPTY, INVALID_UTF8, SplitRejected, reject

log = logging.getLogger(__name__)

LENGTH = "length"  # an output giving the number of valid positions of a line's per-token outputs
SHARD_PATTERN = "predictions-{shard:05d}-of-{num_shards:05d}.jsonl"
MAX_CACHED_MODELS = 2  # models kept per process (the one a job uses, and the one before it)


def shard_name(shard: int, num_shards: int) -> str:
    """``predictions-NNNNN-of-NNNNN.jsonl``."""
    return SHARD_PATTERN.format(shard=shard, num_shards=num_shards)


# ------------------------------------------------------------------------------------- lines
def decode_line(record: dict) -> dict:
    """A corpus record (``raw`` bytes) → a line ``{"index", "source", "line", "text"}``, or a rejected
    record: ``invalid_utf8`` (the detail names the line and the byte) or ``empty`` (nothing, or only
    whitespace). Records already rejected by the reader pass through."""
    if "reason" in record:
        return record
    raw = record["raw"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return reject(record, INVALID_UTF8,
                      f"line {record['line']}: invalid UTF-8 at byte {err.start} of the line ({err.reason})",
                      raw.decode("utf-8", "backslashreplace"))
    if not text.strip():
        return reject(record, EMPTY, "empty line" if not text else "only whitespace", text)
    return {"index": record["index"], "source": record["source"], "line": record["line"], "text": text}


class DecodeLines(beam.PTransform):
    """Corpus records → :class:`~pipelines.beam.rejects.Split` ``(lines, rejected)`` (:func:`decode_line`;
    one ``Map`` and two filters, no multi-output ``ParDo``)."""

    def expand(self, records):
        return records | "Decode" >> beam.Map(decode_line) | "SetAside" >> SplitRejected()


# ------------------------------------------------------------------------------- predictions
def json_value(value: Any) -> Any:
    """A model output (numpy array or scalar, bytes) as a JSON value: lists, ``str`` (UTF-8 decoded),
    ``int``, ``bool`` and ``float`` (a float32 written with the fewest digits that read back as it)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return json_value(value[()])
        return [json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(str(value))  # numpy prints the shortest repr that round-trips in the value's precision
    return value


def prediction_rows(outputs: Any) -> list[dict]:
    """The outputs of one model call on ``B`` texts → ``B`` predictions (``{output name: JSON value}``,
    names sorted); where there is a ``length`` output, each ``[B, T, ...]`` output is cut to the row's
    length (the padding of the batch is not part of a line's prediction)."""
    if not isinstance(outputs, Mapping):
        outputs = {"output": outputs}
    arrays = {key: np.asarray(value) for key, value in sorted(outputs.items())}
    if not arrays:
        return []
    sizes = {key: (a.shape[0] if a.ndim else None) for key, a in arrays.items()}
    batch = set(sizes.values())
    if len(batch) != 1 or None in batch:
        raise ValueError(f"the model's outputs do not share a batch dimension: {sizes}")
    lengths = arrays.get(LENGTH)
    rows = []
    for i in range(batch.pop()):
        row = {}
        for key, a in arrays.items():
            value = a[i]
            if lengths is not None and key != LENGTH and a.ndim >= 2:
                value = value[: int(lengths[i])]
            row[key] = json_value(value)
        rows.append(row)
    return rows


class Predictor:
    """An exported model called through one ``tf.function`` (a ``[None]`` string signature: traced once,
    any batch size); ``predictor(texts)`` → one prediction per text (:func:`prediction_rows`).

    Args:
        model: a loaded rnnflow export (raw strings in: ``LanguageModelScorer``, ``SequenceTaggerExport``,
            ``TextClassifierExport``, ``Seq2SeqExport``, ...).
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self._call = tf.function(lambda texts: model(texts), input_signature=[tf.TensorSpec([None], tf.string)])

    def __call__(self, texts: Sequence[str]) -> list[dict]:
        import tensorflow as tf

        if not texts:
            return []
        outputs = self._call(tf.constant(list(texts), tf.string))
        if isinstance(outputs, Mapping):
            outputs = {key: value.numpy() for key, value in outputs.items()}
        else:
            outputs = outputs.numpy()
        rows = prediction_rows(outputs)
        if len(rows) != len(texts):
            raise ValueError(f"the model returned {len(rows)} predictions for {len(texts)} texts")
        return rows


def load_export(model_uri: str, tracking_uri: str | None = None):
    """The export at ``model_uri`` through rnnflow's safe loader: a ``.keras`` file, an MLflow model
    directory, or a ``models:/`` / ``runs:/`` URI of the store at ``tracking_uri`` (nothing is written
    there). Never runs code from the artifact (:mod:`keras_models.saving`)."""
    from keras_models import saving
    from pipelines import tracking

    path = tracking.local_path(model_uri)
    if path is not None and os.path.isfile(path):
        return saving.load_model(path)
    if path is not None:
        return tracking.load_logged_model(path)
    return tracking.load_model(model_uri, tracking_uri)


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()


def load_predictor(model_uri: str, tracking_uri: str | None = None) -> Predictor:
    """The :class:`Predictor` of ``model_uri`` for this process: loaded (:func:`load_export`) on the first
    call, from the cache after (the :data:`MAX_CACHED_MODELS` last used are kept). Threads of one worker
    wait for one load."""
    key = (model_uri, tracking_uri)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        started = time.monotonic()
        predictor = Predictor(load_export(model_uri, tracking_uri))
        _CACHE[key] = predictor
        while len(_CACHE) > MAX_CACHED_MODELS:
            _CACHE.popitem(last=False)
        log.info("loaded %s in %.1f s (pid %d)", model_uri, time.monotonic() - started, os.getpid())
        return predictor


class ExportModelHandler(ModelHandler):
    """``RunInference``'s model handler for rnnflow exports: lines (``{"index", "source", "line", "text"}``)
    in, ``PredictionResult(line, prediction, model_uri)`` out.

    The model is loaded once per worker process (:func:`load_predictor`; Beam's default of one copy per
    process, not shared across processes); ``BatchElements`` makes batches of ``min_batch_size`` to
    ``max_batch_size`` lines (equal sizes: fixed batches, but a bundle's last one).

    Args:
        model_uri: the model, pinned (``models:/NAME/VERSION``, ``runs:/...`` or a path; an alias would
            let workers load different versions).
        tracking_uri: the MLflow store of ``models:/`` and ``runs:/`` URIs.
        min_batch_size: fewest lines per model call.
        max_batch_size: most lines per model call.
    """

    def __init__(self, model_uri: str, tracking_uri: str | None = None, min_batch_size: int = 64,
                 max_batch_size: int = 64):
        for name, value in (("min_batch_size", min_batch_size), ("max_batch_size", max_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if min_batch_size > max_batch_size:
            raise ValueError(f"min_batch_size {min_batch_size} > max_batch_size {max_batch_size}")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri

    def load_model(self) -> Predictor:
        return load_predictor(self.model_uri, self.tracking_uri)

    def run_inference(self, batch: Sequence[dict], model: Predictor,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        rows = model([line["text"] for line in batch])
        return [PredictionResult(line, row, self.model_uri) for line, row in zip(batch, rows)]

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(len(line["text"].encode("utf-8")) for line in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def __repr__(self) -> str:
        return f"ExportModelHandler({self.model_uri!r}, batches {self._batching_kwargs})"


class Clock:
    """``RunInference``'s clock (``time_ns``): an object a DoFn copy can hold (the default, the ``time``
    module, cannot be deep-copied, which rnnflow's DaskRunner does per partition)."""

    def time_ns(self) -> int:
        return time.time_ns()


class Score(beam.PTransform):
    """Lines → ``PredictionResult`` s: ``RunInference`` with ``handler`` (:class:`ExportModelHandler`)."""

    def __init__(self, handler: ExportModelHandler):
        super().__init__()
        self.handler = handler

    def expand(self, lines):
        return lines | "RunInference" >> RunInference(self.handler, clock=Clock())


# ------------------------------------------------------------------------------------ output
def prediction_line(result: PredictionResult, model_info: dict) -> str:
    """One output line: ``{"input", "source", "line", "prediction", "model": {"name", "version", "uri"}}``."""
    line = result.example
    return json.dumps({"input": line["text"], "source": line["source"], "line": line["line"],
                       "prediction": result.inference, "model": model_info}, ensure_ascii=False)


def shard_of(index: tuple, offsets: Sequence[int], total: int, num_shards: int) -> int:
    """The shard of the line at ``index = (source_position, line_number)``: lines in input order
    (sources in order, then lines), ``total`` of them split into ``num_shards`` contiguous ranges;
    ``offsets[i]``: the lines before source ``i``."""
    position = offsets[index[0]] + index[1] - 1
    return min(num_shards - 1, position * num_shards // max(total, 1))


def _key_by_shard(result, offsets, total, num_shards, model_info):
    index = result.example["index"]
    return shard_of(index, offsets, total, num_shards), (index, prediction_line(result, model_info))


def _write_shard(item, output_dir, num_shards):
    shard, values = item
    values = sorted((v for v in values if v is not None), key=lambda v: v[0])
    data = "".join(line + "\n" for _, line in values).encode("utf-8")
    name = shard_name(shard, num_shards)
    write_bytes_atomic(os.path.join(output_dir, name), data)
    Metrics.counter(NAMESPACE, "predictions_written").inc(len(values))
    log.info("wrote %s (%d predictions)", name, len(values))
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "lines": len(values)}


class WritePredictions(beam.PTransform):
    """``PredictionResult`` s → ``num_shards`` JSONL files (:func:`shard_name`), each a contiguous range of
    the input's lines in input order (:func:`shard_of`), every shard written even when empty; yields one
    ``{"name", "sha256", "bytes", "lines"}`` per shard.

    Args:
        output_dir: where to write (``tf.io.gfile`` path).
        num_shards: how many files.
        offsets: lines before each source (the launcher's count), for :func:`shard_of`.
        total: all lines of all sources.
        model_info: ``{"name", "version", "uri"}`` written with every prediction.
    """

    def __init__(self, output_dir: str, num_shards: int, offsets: Sequence[int], total: int, model_info: dict):
        super().__init__()
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
        self.output_dir = output_dir
        self.num_shards = num_shards
        self.offsets = list(offsets)
        self.total = int(total)
        self.model_info = dict(model_info)

    def expand(self, results):
        keyed = results | "KeyByShard" >> beam.Map(_key_by_shard, self.offsets, self.total, self.num_shards,
                                                   self.model_info)
        every_shard = (results.pipeline  # a marker per shard: a shard with no prediction is written too
                       | "EveryShard" >> beam.Create([(shard, None) for shard in range(self.num_shards)]))
        return (
            (keyed, every_shard)
            | "WithEveryShard" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(_write_shard, self.output_dir, self.num_shards)
        )


def _write_summary(_, path, shards, rejected, read):
    summary = {"read": read, "rejected": rejected,
               "shards": {info["name"]: {k: v for k, v in info.items() if k != "name"}
                          for info in sorted(shards, key=lambda s: s["name"])}}
    write_bytes_atomic(path, json.dumps(summary, sort_keys=True).encode("utf-8"))
    return path


class WriteJobSummary(beam.PTransform):
    """The scoring job's last step: the shard infos (:class:`WritePredictions`), the rejected summary
    (:class:`~pipelines.beam.rejects.WriteRejected`) and the count of lines read gathered into one JSON
    file ``{"read", "rejected", "shards": {name: {"sha256", "bytes", "lines"}}}`` (what the manifest is
    built from). Fed by every file writer, so that every writer runs on a runner that computes only
    what the last step needs."""

    def __init__(self, path: str, shards, rejected, read):
        super().__init__()
        self.path = path
        self.shards, self.rejected, self.read = shards, rejected, read

    def expand(self, pbegin):
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(_write_summary, self.path, beam.pvalue.AsList(self.shards),
                                  beam.pvalue.AsSingleton(self.rejected), beam.pvalue.AsSingleton(self.read))
        )


__all__ = ["Clock", "DecodeLines", "ExportModelHandler", "Predictor", "Score", "WriteJobSummary",
           "WritePredictions", "decode_line", "json_value", "load_export", "load_predictor", "prediction_line",
           "prediction_rows", "shard_name", "shard_of"]
