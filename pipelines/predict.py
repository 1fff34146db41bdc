"""The batch-scoring job: text files, one input per line, → a registered model's predictions as
sharded JSONL, ``rejected/`` and ``manifest.json`` (``rnnflow predict``).

Steps (one Beam pipeline; each a labelled transform of :mod:`pipelines.beam.corpus`,
:mod:`pipelines.beam.inference` or :mod:`pipelines.beam.rejects`)::

    ReadInputs (ReadCorpus: every line, sha256 checked) ─┬─ CountRead ──────────────────────────┐
                                                         └─ DecodeLines ─┬─ Score (RunInference) │
                                                           → WritePredictions ───────────────────┤ WriteSummary
                                                                         └─ WriteRejected ───────┘

The launcher (:func:`predict`), before the pipeline:

1. resolves the model: ``models:/NAME@ALIAS`` (and ``models:/NAME/latest``) becomes the version the
   alias names now, ``models:/NAME/VERSION``, and only that pinned URI goes to the workers: every
   worker loads the same version even if the alias moves while the job runs;
2. loads the model once itself (rnnflow's safe loader: no code from the artifact) to refuse a model
   that is missing, unsafe or no rnnflow export before any work starts;
3. expands the input globs (``tf.io.gfile``: local paths, ``gs://``, ...), hashes each file and counts
   its lines (the workers check the sha256 when they read it: a file that changes fails the job);
4. refuses an existing output directory unless ``force``.

Output: ``DIR/predictions-NNNNN-of-NNNNN.jsonl`` (lines in input order, shard by shard; each line
``{"input", "source", "line", "prediction", "model": {"name", "version", "uri"}}``),
``DIR/rejected/rejected-00000-of-00001.jsonl`` (invalid UTF-8 and empty / whitespace-only lines, each
with ``source``, ``line``, ``reason``, ``detail`` and ``text``) and ``DIR/manifest.json`` (model, inputs with
sha256 and line counts, counts read / predicted / rejected, shards with sha256, batching, runner, start
and finish times). Written into a hidden temporary sibling (:mod:`pipelines.output_dirs`, as the
prepare job does) and renamed into place when complete; with ``force`` an existing ``DIR`` is
replaced only then (a failed job keeps it). Every line read must come out as a prediction or a
rejection, else the job fails and keeps nothing.

Runners: ``beam_args`` as for the prepare job (:mod:`pipelines.beam.runners`: ``--runner DaskRunner``
etc.). On a distributed runner, the output directory's parent, the inputs and a local model path must
be on storage every worker reaches, and a ``models:/`` model's tracking store too (an ``mlflow server``,
not a sqlite file, across machines).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import tensorflow as tf

from pipelines import datasets, tasks
from pipelines.beam.corpus import ReadCorpus
from pipelines.beam.files import write_bytes_atomic
from pipelines.beam.inference import (DecodeLines, ExportModelHandler, Score, WriteJobSummary, WritePredictions,
                                      load_predictor, shard_name)
from pipelines.beam.names import NAMESPACE
from pipelines.beam.rejects import WriteRejected
from pipelines.beam.runners import log_counters, make_runner, pipeline_options, runner_name
from pipelines.output_dirs import host, make_tmp_dir, read_json, remove_dead_leftovers, rename_dir, rmtree, tmp_dir_name
from pipelines.readers import split_lines

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMMARY_FILE = "_summary.json"
LINES_PER_SHARD = 100_000  # the default number of shards: one per this many input lines
DEFAULT_BATCH_SIZE = 64


class OutputExistsError(FileExistsError):
    """The output directory exists and ``force`` was not given."""


@dataclass(frozen=True)
class ModelRef:
    """A model reference pinned down on the launcher: ``uri`` is what the workers load
    (``models:/NAME/VERSION`` for registry URIs, never an alias); ``requested`` is what was asked for."""

    requested: str
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    def info(self) -> dict[str, str | None]:
        """``{"name", "version", "uri"}``: what every output line records."""
        return {"name": self.name, "version": self.version, "uri": self.uri}


def resolve_model(model: str, tracking_uri: str | None = None) -> ModelRef:
    """Pins ``model`` down: ``models:/NAME@ALIAS`` / ``models:/NAME/latest`` → ``models:/NAME/VERSION``
    (the version they name now), other registry and ``runs:/`` URIs as they are, a local path made
    absolute (the ``.keras`` file of a run's model directory).

    Raises:
        ModelNotFoundError: no such store, registered model, version, alias, run or path (the message
            lists what exists).
    """
    from keras_models.saving import ModelNotFoundError
    from pipelines import tracking

    path = tracking.local_path(model)
    if path is None:
        resolved = tracking.resolve_model_uri(model, tracking_uri)
        return ModelRef(requested=model, uri=resolved.uri, name=resolved.name, version=resolved.version,
                        run_id=resolved.run_id)
    path = os.path.abspath(path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "MLmodel")):
        found = [os.path.join(path, t.model_file) for t in tasks.all_tasks()
                 if os.path.isfile(os.path.join(path, t.model_file))]
        if not found:
            names = " / ".join(dict.fromkeys(t.model_file for t in tasks.all_tasks()))
            raise ModelNotFoundError(f"{model}: neither an MLmodel nor {names} in this directory")
        path = found[0]
    elif not os.path.exists(path):
        raise ModelNotFoundError(
            f"{model}: no such file or directory; give a .keras file, a run's model directory or an MLflow URI "
            "(models:/NAME@champion, models:/NAME/VERSION, runs:/RUN_ID/model)")
    return ModelRef(requested=model, uri=path)


def input_sources(patterns: list[str]) -> list[datasets.CorpusSource]:
    """The files of ``patterns`` (paths or globs, in the order given, each glob's matches sorted, a file
    matched twice read once), as line sources (:func:`pipelines.datasets.text_sources`).

    Raises:
        FileNotFoundError: a pattern that matches no file (named).
    """
    if not patterns:
        raise ValueError("no input: give at least one file or glob")
    for pattern in patterns:
        if not [m for m in tf.io.gfile.glob(os.fspath(pattern)) if not tf.io.gfile.isdir(m)]:
            raise FileNotFoundError(f"input {pattern!r} matches no file")
    return datasets.text_sources([os.fspath(p) for p in patterns])


def build_pipeline(p: beam.Pipeline, sources: list[datasets.CorpusSource], inputs: list[dict], out_dir: str,
                   handler: ExportModelHandler, model_info: dict, num_shards: int) -> None:
    """Wires the scoring steps into ``p``, writing under ``out_dir``; ``inputs``: the launcher's
    ``[{"path", "sha256", "lines"}]`` of ``sources`` (sha256 checked by the readers, line counts for the
    shard ranges)."""
    offsets, total = [], 0
    for info in inputs:
        offsets.append(total)
        total += info["lines"]
    records = p | "ReadInputs" >> ReadCorpus(sources, {i["path"]: i["sha256"] for i in inputs})
    read = records | "CountRead" >> beam.combiners.Count.Globally()
    lines, rejected = records | "DecodeLines" >> DecodeLines()
    results = lines | "Score" >> Score(handler)
    shards = results | "WritePredictions" >> WritePredictions(out_dir, num_shards, offsets, total, model_info)
    rejected_info = rejected | "WriteRejected" >> WriteRejected(out_dir)
    # Last, and fed by every step that writes a file (as in the prepare job).
    _ = p | "WriteSummary" >> WriteJobSummary(os.path.join(out_dir, SUMMARY_FILE), shards, rejected_info, read)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _counts(summary: dict, inputs: list[dict], num_shards: int) -> dict[str, int]:
    """``{"read", "predicted", "rejected"}`` from the job's own summary, after checking that every line
    of the inputs was read and came out as a prediction or a rejection, in every shard.

    Raises:
        RuntimeError: lines went missing (a runner that lost data), or a shard was not written.
    """
    missing = [shard_name(i, num_shards) for i in range(num_shards) if shard_name(i, num_shards) not in summary["shards"]]
    if missing:
        raise RuntimeError(f"the pipeline did not write shard(s) {missing}; nothing was kept")
    expected = sum(i["lines"] for i in inputs)
    read = summary["read"]
    predicted = sum(s["lines"] for s in summary["shards"].values())
    rejected = summary["rejected"]["count"]
    if read != expected or read != predicted + rejected:
        raise RuntimeError(
            f"the runner lost lines: the inputs hold {expected}, {read} were read, {predicted} predicted and "
            f"{rejected} rejected ({expected - predicted - rejected} missing); nothing was kept. Run it again; "
            "if it happens again, use another runner and report it")
    return {"read": read, "predicted": predicted, "rejected": rejected}


def _move_into_place(tmp_dir: str, final_dir: str, force: bool) -> None:
    """Renames ``tmp_dir`` to ``final_dir``; an existing ``final_dir`` (``force``) is moved aside first and
    removed only once the new one is in place."""
    old = None
    if tf.io.gfile.exists(final_dir):
        if not force:
            raise OutputExistsError(f"{final_dir} appeared while the job ran; the new output is not kept")
        parent, name = os.path.split(final_dir)
        old = os.path.join(parent, tmp_dir_name(name, host(), os.getpid()))  # removable if we die here
        rename_dir(final_dir, old)
        log.info("replacing %s", final_dir)
    rename_dir(tmp_dir, final_dir)
    if old is not None:
        rmtree(old)


def predict(model: str | ModelRef, inputs: list[str], output_dir: str, beam_args: list[str] | None = None, *,
            tracking_uri: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, min_batch_size: int | None = None,
            num_shards: int | None = None, force: bool = False) -> Path:
    """Scores every line of ``inputs`` with ``model`` as a Beam job; returns the output directory.

    Args:
        model: a model URI (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/ID/model``), a path,
            or a :class:`ModelRef` from :func:`resolve_model` (already pinned).
        inputs: files or globs, one text per line.
        output_dir: the directory to create (its parent must exist or be creatable).
        beam_args: Beam pipeline options (``--runner``, ``--dask_client_address``, ...).
        tracking_uri: the MLflow store of ``models:/`` and ``runs:/`` URIs.
        batch_size: most lines per model call (``RunInference``'s ``max_batch_size``).
        min_batch_size: fewest lines per model call; default ``batch_size`` (fixed batches).
        num_shards: output files; default one per :data:`LINES_PER_SHARD` input lines.
        force: replace an existing ``output_dir`` (once the new output is complete).

    Raises:
        OutputExistsError: ``output_dir`` exists and not ``force``.
        ModelLoadError: the model is missing, refused, or not an rnnflow export.
        FileNotFoundError: an input pattern matches no file.
        RuntimeError: the runner lost lines (nothing is kept).
    """
    from keras_models.saving import UnsafeModelError

    started, clock = _now(), time.monotonic()
    options = pipeline_options(beam_args)
    final_dir = os.fspath(output_dir).rstrip("/") or "/"
    parent, name = os.path.split(final_dir)
    parent = parent or "."
    if tf.io.gfile.exists(final_dir) and not force:
        raise OutputExistsError(f"{final_dir} exists; give another output directory, or --force to replace it")
    min_batch_size = batch_size if min_batch_size is None else min_batch_size
    if num_shards is not None and (isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1):
        raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
    ref = model if isinstance(model, ModelRef) else resolve_model(model, tracking_uri)
    handler = ExportModelHandler(ref.uri, tracking_uri, min_batch_size, batch_size)
    predictor = load_predictor(ref.uri, tracking_uri)  # kept while the job runs: in-process workers reuse it
    try:
        task = tasks.for_model(predictor.model)
    except ValueError:
        raise UnsafeModelError(f"{ref.requested}: a {type(predictor.model).__name__}, not an rnnflow export "
                               f"({', '.join(t.model_type for t in tasks.all_tasks())})") from None
    sources = input_sources(list(inputs))
    input_info = []
    for source in sources:
        data = source.read_bytes()
        input_info.append({"path": source.name, "sha256": datasets.sha256_bytes(data), "bytes": len(data),
                           "lines": len(split_lines(data))})
    total = sum(i["lines"] for i in input_info)
    num_shards = num_shards or max(1, math.ceil(total / LINES_PER_SHARD))
    runner = {"name": runner_name(options), "args": list(beam_args or [])}
    log.info("predict: %d line(s) of %d file(s) with %s (%s, version %s), runner %s, batches of %d-%d, %d shard(s)",
             total, len(sources), ref.uri, task.name, ref.version, runner["name"], min_batch_size, batch_size,
             num_shards)

    remove_dead_leftovers(parent, name, log)
    tmp_dir = make_tmp_dir(parent, name)
    try:
        p = beam.Pipeline(runner=make_runner(options), options=options)
        build_pipeline(p, sources, input_info, tmp_dir, handler, ref.info(), num_shards)
        result = p.run()
        state = result.wait_until_finish()
        log.info("predict: pipeline finished (%s); counters:", state)
        log_counters(result, NAMESPACE, log)
        summary_path = os.path.join(tmp_dir, SUMMARY_FILE)
        summary = read_json(summary_path)
        tf.io.gfile.remove(summary_path)
        counts = _counts(summary, input_info, num_shards)
        model_section: dict[str, Any] = {**ref.info(), "requested": ref.requested, "run_id": ref.run_id,
                                         "task": task.name, "type": type(predictor.model).__name__}
        labels = getattr(task, "model_label_names", None)
        if labels is not None:
            model_section["labels"] = list(labels(predictor.model))
        manifest = {
            "model": model_section,
            "inputs": input_info,
            "counts": counts,
            "rejected": summary["rejected"],
            "shards": [{"name": n, **summary["shards"][n]} for n in (shard_name(i, num_shards) for i in range(num_shards))],
            "batching": {"min_batch_size": min_batch_size, "max_batch_size": batch_size},
            "runner": runner,
            "started": started,
            "finished": _now(),
        }
        data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        write_bytes_atomic(os.path.join(tmp_dir, MANIFEST), data)
        _move_into_place(tmp_dir, final_dir, force)
    except BaseException:
        rmtree(tmp_dir)
        raise
    log.info("predict: done in %.1f s → %s (%d read, %d predicted, %d rejected%s)", time.monotonic() - clock,
             final_dir, counts["read"], counts["predicted"], counts["rejected"],
             f": {summary['rejected']['by_reason']}" if counts["rejected"] else "")
    return Path(final_dir)

