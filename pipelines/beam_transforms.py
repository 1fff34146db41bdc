"""Beam DoFns and PTransforms of the prepare job; each one is usable (and tested) on its own.

Element shapes (plain dicts, so that any runner can encode them with its default coder):

* corpus record (:class:`ReadCorpus`): ``{"index": (source_position, line_number), "split": str |
  None, "source": str, "line": int, "raw": bytes}``. ``index`` orders records in corpus order.
* tokenized record (:class:`TokenizeLines`, main output ``accepted``): the same without ``raw``, plus
  ``"tokens": list[str]``.
* rejected record (output ``rejected``): ``{"index", "split", "source", "line", "reason", "detail",
  "text"}`` with ``reason`` one of :data:`REJECT_REASONS`.
* encoded record (:class:`EncodeForLM`): ``{"index", "split", "ids": list[int], "unk": int}``.

Heavy objects (the tensorflow-text tokenizer) are made in ``DoFn.setup()``; tokenization runs on
batches of lines (one TensorFlow call per batch), since per-element eager calls are slow.

Files are written with ``tf.io.gfile`` (local paths, ``gs://``, ``hdfs://``, ...), each to a temporary
name first and renamed, so a retried bundle never leaves a partial file behind.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import operator
import os
import uuid
from typing import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

import tensorflow as tf

from pipelines.datasets import CorpusSource
from preprocessing import schema
from preprocessing.tokenizers import Tokenizer, TokenizerConfig
from preprocessing.vocab import EOS_ID, UNK_ID, Vocabulary

log = logging.getLogger(__name__)

NAMESPACE = "rnnflow"
ACCEPTED, REJECTED = "accepted", "rejected"
INVALID_UTF8, EMPTY, TOO_LONG, TOKENIZER_ERROR = "invalid_utf8", "empty", "too_long", "tokenizer_error"
REJECT_REASONS = (INVALID_UTF8, EMPTY, TOO_LONG, TOKENIZER_ERROR)
TOKENS_PER_SHARD = 1_000_000
VOCAB_FILE = "vocab/tokens.txt"
REJECTED_FILE = "rejected/rejected-00000-of-00001.jsonl"


# ---------------------------------------------------------------------------------------- runner
DIRECT_RUNNER_NAMES = ("directrunner", "direct", "switchingdirectrunner", "fnapirunner")


def local_runner(options=None):
    """Beam's in-process ``FnApiRunner``: what ``DirectRunner`` runs batch pipelines on.

    Beam 2.77's ``DirectRunner`` first tries the ``PrismRunner``, which downloads a binary from
    GitHub at run time; this project never downloads anything at run time, so local runs (and the
    tests' ``TestPipeline``) use the ``FnApiRunner`` directly. It honours ``--direct_num_workers`` and
    ``--direct_running_mode`` (``in_memory``, ``multi_threading``, ``multi_processing``).
    """
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    if options is None:
        return fn_runner.FnApiRunner()
    try:  # hand the pipeline options to the SDK workers, as DirectRunner does
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info)
    except Exception:  # noqa: BLE001 - internal API; the plain runner works too
        return fn_runner.FnApiRunner()


# ----------------------------------------------------------------------------------------- files
def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary sibling of ``path`` and renames it into place."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_tfrecords(path: str, records: Iterable[bytes]) -> int:
    """Writes a GZIP TFRecord file (temporary name, then rename); returns the record count."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    n = 0
    with tf.io.TFRecordWriter(tmp, options=schema.COMPRESSION) as writer:
        for record in records:
            writer.write(record)
            n += 1
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return n


# ------------------------------------------------------------------------------------------ read
def _read_source(item, expected_sha256):
    """``(position, CorpusSource)`` → corpus records (no annotations: Beam would log them as unknown hints)."""
    position, source = item
    data = source.read_bytes()
    if expected_sha256 is not None and source.name in expected_sha256:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256[source.name]:
            raise RuntimeError(
                f"{source.name} changed while the prepare job ran (sha256 {digest}, "
                f"expected {expected_sha256[source.name]}); run it again"
            )
    n = 0
    for split, name, line, raw in source.records(data):
        n += 1
        yield {"index": (position, line), "split": split, "source": name, "line": line, "raw": raw}
    Metrics.counter(NAMESPACE, "lines_read").inc(n)
    log.info("read %d lines from %s", n, source.name)


class ReadCorpus(beam.PTransform):
    """Reads the sources (in workers) into corpus records, then redistributes them.

    Args:
        sources: the ordered :class:`~pipelines.datasets.CorpusSource` list; its order defines
            ``index[0]``.
        expected_sha256: optional ``{source name: sha256}``; a source whose bytes differ fails the job.
        reshuffle: redistribute records after reading (lets a distributed runner parallelize).
    """

    def __init__(self, sources: list[CorpusSource], expected_sha256: dict[str, str] | None = None, reshuffle=True):
        super().__init__()
        self.sources = list(sources)
        self.expected_sha256 = dict(expected_sha256) if expected_sha256 else None
        self.reshuffle = reshuffle

    def expand(self, pbegin):
        records = (
            pbegin
            | "Sources" >> beam.Create(list(enumerate(self.sources)))
            | "ReadLines" >> beam.FlatMap(_read_source, self.expected_sha256)
        )
        if self.reshuffle:
            records = records | "Redistribute" >> beam.Reshuffle()
        return records


# ----------------------------------------------------------------------------------------- split
def hash_split(source: str, line: int, valid: float, test: float, seed: int = 0) -> str:
    """Deterministic split of one line: sha256 of ``seed, source, line`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}\x00{source}\x00{line}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < valid:
        return "valid"
    if u < valid + test:
        return "test"
    return "train"


def _assign_split(record, valid, test, seed):
    if record["split"] is not None:
        return record
    out = dict(record)
    out["split"] = hash_split(record["source"], record["line"], valid, test, seed)
    return out


class AssignSplit(beam.PTransform):
    """Gives records without a split (``split`` is ``None``) one by :func:`hash_split`; others pass unchanged."""

    def __init__(self, valid: float, test: float, seed: int = 0):
        super().__init__()
        if valid < 0 or test < 0 or valid + test >= 1:
            raise ValueError(f"split fractions valid={valid}, test={test} must be >= 0 and sum below 1")
        self.valid, self.test, self.seed = valid, test, seed

    def expand(self, records):
        return records | "HashSplit" >> beam.Map(_assign_split, self.valid, self.test, self.seed)


class TakeFirstPerSplit(beam.PTransform):
    """Keeps the first ``max_lines[split]`` records of each listed split (by ``index``: corpus order).

    Splits not listed in ``max_lines`` pass through whole. Deterministic on every runner.
    """

    def __init__(self, max_lines: dict[str, int] | None):
        super().__init__()
        self.max_lines = dict(max_lines or {})
        for split, n in self.max_lines.items():
            if n < 0:
                raise ValueError(f"max_lines[{split!r}] must be >= 0, got {n}")

    def expand(self, records):
        if not self.max_lines:
            return records
        limited = sorted(self.max_lines)
        parts = [records | "Unlimited" >> beam.Filter(lambda r, s: r["split"] not in s, frozenset(limited))]
        for split in limited:
            parts.append(
                records
                | f"Only[{split}]" >> beam.Filter(lambda r, s: r["split"] == s, split)
                | f"First[{split}]" >> beam.combiners.Top.Smallest(self.max_lines[split], key=operator.itemgetter("index"))
                | f"Unpack[{split}]" >> beam.FlatMap(lambda rs: rs)
            )
        return tuple(parts) | "Merge" >> beam.Flatten()


# -------------------------------------------------------------------------------------- tokenize
def _preview(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


class TokenizeBatchDoFn(beam.DoFn):
    """Decodes, normalizes and tokenizes a *list* of corpus records in one TensorFlow call.

    Main output: tokenized records. Tagged output ``rejected``: records that are not valid UTF-8,
    are empty after normalization (no token, or only whitespace tokens at character level), or
    have more than ``max_length`` tokens.
    """

    def __init__(self, tokenizer_config: TokenizerConfig, max_length: int, log_every: int = 100_000):
        self.tokenizer_config = tokenizer_config
        self.max_length = max_length
        self.log_every = log_every
        self._tokenizer = None

    def setup(self):
        self._tokenizer = Tokenizer(self.tokenizer_config)
        self._seen = 0
        self._lines = Metrics.counter(NAMESPACE, "lines_tokenized")
        self._accepted = Metrics.counter(NAMESPACE, "lines_accepted")
        self._tokens = Metrics.counter(NAMESPACE, "tokens_accepted")
        self._rejected = {r: Metrics.counter(NAMESPACE, f"rejected_{r}") for r in REJECT_REASONS}

    def _reject(self, record: dict, reason: str, detail: str, text: str):
        self._rejected[reason].inc()
        return TaggedOutput(
            REJECTED,
            {
                "index": record["index"],
                "split": record["split"],
                "source": record["source"],
                "line": record["line"],
                "reason": reason,
                "detail": detail,
                "text": _preview(text),
            },
        )

    def _tokenize(self, texts: list[str]) -> list[list[str] | Exception]:
        try:
            return self._tokenizer.tokenize_batch_py(texts)
        except Exception:  # one bad line must not sink the batch: retry one by one
            out: list[list[str] | Exception] = []
            for text in texts:
                try:
                    out.append(self._tokenizer.tokenize_py(text))
                except Exception as err:  # noqa: BLE001 - reported as a rejection reason
                    out.append(err)
            return out

    def process(self, batch):
        valid: list[tuple[dict, str]] = []
        for record in batch:
            try:
                valid.append((record, record["raw"].decode("utf-8")))
            except UnicodeDecodeError as err:
                yield self._reject(
                    record, INVALID_UTF8, f"{err.reason} at byte {err.start}",
                    record["raw"].decode("utf-8", "backslashreplace"),
                )
        results = self._tokenize([text for _, text in valid]) if valid else []
        for (record, text), tokens in zip(valid, results):
            if isinstance(tokens, Exception):
                yield self._reject(record, TOKENIZER_ERROR, f"{type(tokens).__name__}: {tokens}"[:500], text)
            elif not any(t.strip() for t in tokens):
                yield self._reject(record, EMPTY, "no token after normalization", text)
            elif len(tokens) > self.max_length:
                yield self._reject(record, TOO_LONG, f"{len(tokens)} tokens > max_length {self.max_length}", text)
            else:
                self._accepted.inc()
                self._tokens.inc(len(tokens))
                yield {
                    "index": record["index"],
                    "split": record["split"],
                    "source": record["source"],
                    "line": record["line"],
                    "tokens": tokens,
                }
        self._lines.inc(len(batch))
        before, self._seen = self._seen, self._seen + len(batch)
        if self._seen // self.log_every != before // self.log_every:
            log.info("tokenized %d lines (this worker)", self._seen)


class TokenizeLines(beam.PTransform):
    """Batches corpus records and tokenizes them; returns outputs ``accepted`` (main) and ``rejected``.

    Example::

        out = records | TokenizeLines(TokenizerConfig(), max_length=100)
        out.accepted, out.rejected
    """

    def __init__(self, tokenizer_config: TokenizerConfig, max_length: int, min_batch_size=256, max_batch_size=2048):
        super().__init__()
        self.tokenizer_config = tokenizer_config
        self.max_length = max_length
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size

    def expand(self, records):
        return (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=self.min_batch_size, max_batch_size=self.max_batch_size)
            | "Tokenize"
            >> beam.ParDo(TokenizeBatchDoFn(self.tokenizer_config, self.max_length)).with_outputs(
                REJECTED, main=ACCEPTED
            )
        )


# ----------------------------------------------------------------------------------------- vocab
class CountTokens(beam.PTransform):
    """``(token, count)`` over the tokenized records of one split (default: train only)."""

    def __init__(self, split: str | None = "train"):
        super().__init__()
        self.split = split

    def expand(self, records):
        if self.split is not None:
            records = records | f"Only[{self.split}]" >> beam.Filter(lambda r, s: r["split"] == s, self.split)
        return (
            records
            | "Tokens" >> beam.FlatMap(operator.itemgetter("tokens"))
            | "Count" >> beam.combiners.Count.PerElement()
        )


def _build_vocabulary(pairs, max_size, min_count):
    vocab = Vocabulary.from_counts(pairs, max_size=max_size, min_count=min_count)
    log.info("vocabulary: %d tokens (%d distinct in the counted split)", len(vocab), len(pairs))
    return vocab


class BuildVocabulary(beam.PTransform):
    """``(token, count)`` pairs → a one-element PCollection holding a :class:`Vocabulary` (use ``AsSingleton``)."""

    def __init__(self, max_size: int | None = None, min_count: int = 1):
        super().__init__()
        self.max_size = max_size
        self.min_count = min_count

    def expand(self, counts):
        return (
            counts
            | "DropRare" >> beam.Filter(lambda kv, m: kv[1] >= m, self.min_count)
            | "Gather" >> beam.combiners.ToList()
            | "FromCounts" >> beam.Map(_build_vocabulary, self.max_size, self.min_count)
        )


# ---------------------------------------------------------------------------------------- encode
class EncodeForLMDoFn(beam.DoFn):
    """Tokens → ids followed by ``<eos>`` (Mikolov's PTB setup); side input: the :class:`Vocabulary`."""

    def process(self, record, vocab):
        ids = vocab.encode(record["tokens"])
        unk = sum(1 for i in ids if i == UNK_ID)
        ids.append(EOS_ID)
        yield {"index": record["index"], "split": record["split"], "ids": ids, "unk": unk}


class EncodeForLM(beam.PTransform):
    def __init__(self, vocab):
        """``vocab``: a PCollection holding one :class:`Vocabulary` (from :class:`BuildVocabulary`)."""
        super().__init__()
        self.vocab = vocab

    def expand(self, records):
        return records | "Encode" >> beam.ParDo(EncodeForLMDoFn(), beam.pvalue.AsSingleton(self.vocab))


# ----------------------------------------------------------------------------------------- stats
def length_bucket(length: int) -> int:
    """Lower bound of the power-of-two histogram bucket of ``length`` (>= 1)."""
    return 1 << (max(int(length), 1).bit_length() - 1)


def num_shards_for(tokens: int, examples: int, requested: int, tokens_per_shard: int = TOKENS_PER_SHARD) -> int:
    """Shards for a split: ``requested`` (0: one per ~``tokens_per_shard`` tokens), at most one per example."""
    if examples <= 0:
        return 0
    wanted = requested if requested > 0 else max(1, math.ceil(tokens / tokens_per_shard))
    return min(wanted, examples)


class SplitSummaryFn(beam.CombineFn):
    """Per-split stats and contiguous shard boundaries, from ``(index, length, unk)`` values.

    Output: ``{"examples", "tokens", "unk_tokens", "oov_rate", "length_histogram", "num_shards",
    "boundaries"}`` where ``tokens`` counts every id written (``<eos>`` included), ``oov_rate`` is
    ``unk_tokens / tokens``, and ``boundaries[k]`` is the ``index`` of shard ``k``'s first record
    (shards hold equal numbers of consecutive records, up to one).
    """

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD):
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard

    def create_accumulator(self):
        return [0, 0, {}, []]  # tokens, unk, histogram {bucket: n}, indices

    def add_input(self, acc, value):
        index, length, unk = value
        acc[0] += length
        acc[1] += unk
        bucket = length_bucket(length)
        acc[2][bucket] = acc[2].get(bucket, 0) + 1
        acc[3].append(index)
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out[0] += acc[0]
            out[1] += acc[1]
            for b, n in acc[2].items():
                out[2][b] = out[2].get(b, 0) + n
            out[3].extend(acc[3])
        return out

    def extract_output(self, acc):
        tokens, unk, hist, indices = acc
        indices = sorted(indices)
        examples = len(indices)
        k = num_shards_for(tokens, examples, self.num_shards, self.tokens_per_shard)
        return {
            "examples": examples,
            "tokens": tokens,
            "unk_tokens": unk,
            "oov_rate": (unk / tokens) if tokens else 0.0,
            "length_histogram": {f"{b}-{2 * b - 1}": hist[b] for b in sorted(hist)},
            "num_shards": k,
            "boundaries": [indices[(s * examples) // k] for s in range(k)],
        }


class SummarizeSplits(beam.PTransform):
    """Encoded records → ``(split, summary)`` (see :class:`SplitSummaryFn`) for every non-empty split."""

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD):
        super().__init__()
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard

    def expand(self, encoded):
        return (
            encoded
            | "KeyBySplit" >> beam.Map(lambda r: (r["split"], (r["index"], len(r["ids"]), r["unk"])))
            | "Summarize" >> beam.CombinePerKey(SplitSummaryFn(self.num_shards, self.tokens_per_shard))
        )


# ----------------------------------------------------------------------------------------- write
def _key_by_shard(record, summaries, task):
    summary = summaries[record["split"]]
    shard = bisect.bisect_right(summary["boundaries"], record["index"]) - 1
    serialized = schema.encode_example(task, {"ids": record["ids"]})
    return (record["split"], shard, summary["num_shards"]), (record["index"], serialized)


class WriteShardDoFn(beam.DoFn):
    """Writes one shard: its records sorted by ``index`` into ``<dir>/<split>-NNNNN-of-NNNNN.tfrecord.gz``."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, element):
        (split, shard, num_shards), values = element
        values = sorted(values, key=operator.itemgetter(0))
        name = schema.shard_name(split, shard, num_shards)
        n = write_tfrecords(os.path.join(self.output_dir, name), (v for _, v in values))
        Metrics.counter(NAMESPACE, "records_written").inc(n)
        log.info("wrote %s (%d records)", name, n)
        yield name


class WriteShards(beam.PTransform):
    """Encoded records → sharded GZIP TFRecords honouring the order contract; yields the shard names.

    Args:
        output_dir: directory to write into (``tf.io.gfile`` path).
        summaries: the ``(split, summary)`` PCollection from :class:`SummarizeSplits`.
        task: schema task of the records (only ``"lm"``: feature ``ids``).
    """

    def __init__(self, output_dir: str, summaries, task: str = "lm"):
        super().__init__()
        self.output_dir = output_dir
        self.summaries = summaries
        self.task = task

    def expand(self, encoded):
        return (
            encoded
            | "KeyByShard" >> beam.Map(_key_by_shard, beam.pvalue.AsDict(self.summaries), self.task)
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShardDoFn(self.output_dir))
        )


def rejected_json_line(record: dict) -> str:
    obj = {k: record[k] for k in ("source", "line", "split", "reason", "detail", "text")}
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def _write_rejected(records, output_dir):
    records = sorted(records, key=operator.itemgetter("index"))
    data = "".join(rejected_json_line(r) + "\n" for r in records).encode("utf-8")
    write_bytes_atomic(os.path.join(output_dir, REJECTED_FILE), data)
    by_reason: dict[str, int] = {}
    for r in records:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    if records:
        log.info("set aside %d rejected lines: %s", len(records), by_reason)
    return {"count": len(records), "by_reason": dict(sorted(by_reason.items())), "path": REJECTED_FILE}


class WriteRejected(beam.PTransform):
    """Rejected records → one JSONL file in corpus order (always written, possibly empty); yields a summary
    ``{"count", "by_reason", "path"}``."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, rejected):
        return (
            rejected
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_rejected, self.output_dir)
        )


def _write_vocabulary(vocab, output_dir):
    data = vocab.to_bytes()
    write_bytes_atomic(os.path.join(output_dir, VOCAB_FILE), data)
    return {"path": VOCAB_FILE, "size": len(vocab), "sha256": hashlib.sha256(data).hexdigest()}


class WriteVocabulary(beam.PTransform):
    """The one-element Vocabulary PCollection → ``vocab/tokens.txt``; yields ``{"path", "size", "sha256"}``."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, vocab):
        return vocab | "Write" >> beam.Map(_write_vocabulary, self.output_dir)


def _write_summary(_, path, splits, rejected, vocab, shards):
    summary = {
        "splits": {
            split: {k: v for k, v in s.items() if k != "boundaries"} for split, s in sorted(splits.items())
        },
        "rejected": rejected,
        "vocab": vocab,
        "shards": sorted(shards),
    }
    write_bytes_atomic(path, json.dumps(summary, sort_keys=True).encode("utf-8"))
    return path


class WriteSummary(beam.PTransform):
    """Gathers split summaries, rejected and vocabulary summaries and shard names into one JSON file."""

    def __init__(self, path: str, splits, rejected, vocab, shards):
        super().__init__()
        self.path = path
        self.splits, self.rejected, self.vocab, self.shards = splits, rejected, vocab, shards

    def expand(self, pbegin):
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Write"
            >> beam.Map(
                _write_summary,
                self.path,
                beam.pvalue.AsDict(self.splits),
                beam.pvalue.AsSingleton(self.rejected),
                beam.pvalue.AsSingleton(self.vocab),
                beam.pvalue.AsList(self.shards),
            )
        )
