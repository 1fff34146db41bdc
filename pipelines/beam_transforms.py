"""Beam DoFns and PTransforms of the prepare job; each one is usable (and tested) on its own.

Element shapes (plain dicts, so that any runner can encode them with its default coder):

* corpus record (:class:`ReadCorpus`): ``{"index": (source_position, line_number), "split": str |
  None, "source": str, "line": int, "item": int}`` plus the format's fields: ``"raw": bytes`` (text
  to tokenize), ``"label": str`` (classification), ``"tokens", "tags": list[str]`` (tagging,
  pre-tokenized). ``index`` orders records in corpus order; ``item`` is the ordinal in its source.
* tokenized record (:class:`TokenizeLines`, main output ``accepted``): the same without ``raw``, plus
  ``"tokens": list[str]`` (pre-tokenized records: their tokens normalized).
* rejected record: ``{"index", "split", "source", "line", "reason", "detail", "text"}``; reasons:
  :data:`REJECT_REASONS` here, the readers' (``pipelines/readers.py``) for unreadable input.
* encoded record (:class:`EncodeForLM`, :class:`EncodeExamples`): ``{"index", "split", "features":
  {schema key: ids}, "unk": int, "labels": list[str]}`` (``labels``: the tags or the label, for the
  per-split label counts).

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
from preprocessing.manifest import file_digest
from preprocessing.tokenizers import Tokenizer, TokenizerConfig
from preprocessing.vocab import EOS_ID, UNK_ID, LabelSet, Vocabulary

log = logging.getLogger(__name__)

NAMESPACE = "rnnflow"
ACCEPTED, REJECTED = "accepted", "rejected"
INVALID_UTF8, EMPTY, TOO_LONG, TOKENIZER_ERROR = "invalid_utf8", "empty", "too_long", "tokenizer_error"
TOKEN_TOO_LONG = "token_too_long"
DUPLICATE, UNKNOWN_TAG, UNKNOWN_LABEL = "duplicate", "unknown_tag", "unknown_label"
REJECT_REASONS = (INVALID_UTF8, EMPTY, TOO_LONG, TOKEN_TOO_LONG, TOKENIZER_ERROR, DUPLICATE, UNKNOWN_TAG,
                  UNKNOWN_LABEL)
DEFAULT_MAX_TOKEN_CHARS = 100  # DataConfig.max_token_chars' default
TOKEN_PREVIEW_CHARS = 40
TOKENS_PER_SHARD = 1_000_000
VOCAB_FILE = "vocab/tokens.txt"
TAGS_FILE = "vocab/tags.txt"
LABELS_FILE = "vocab/labels.txt"
CHARS_FILE = "vocab/chars.txt"
TARGET_VOCAB_FILE = "vocab/target.txt"
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
    for item in source.records(data):
        n += 1
        record = {"index": (position, item["line"]), **item}
        if "reject" in item:  # unreadable input, in the rejected-record shape (see SplitRejected)
            Metrics.counter(NAMESPACE, f"rejected_{item['reject']}").inc()
            record = {"index": record["index"], "split": item["split"], "source": item["source"], "line": item["line"],
                      "reason": item["reject"], "detail": item["detail"], "text": _preview(item["text"])}
        yield record
    Metrics.counter(NAMESPACE, "items_read").inc(n)
    log.info("read %d items from %s", n, source.name)


class ReadCorpus(beam.PTransform):
    """Reads the sources (in workers) into corpus records, then redistributes them.

    Items a reader could not parse come out in the rejected-record shape (they have ``reason``);
    :class:`SplitRejected` sets them apart.

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
def hash_split(source: str, line, valid: float, test: float, seed: int = 0) -> str:
    """Deterministic split of one line: sha256 of ``seed, source, line`` (stable across runs and machines).
    ``line`` may also be a group key (a string)."""
    digest = hashlib.sha256(f"{seed}\x00{source}\x00{line}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < valid:
        return "valid"
    if u < valid + test:
        return "test"
    return "train"


def interleave_split(item: int, valid: float, test: float, period: int) -> str:
    """Split of the ``item``-th record (0-based) of a source: of every ``period`` records the last
    ``round(test * period)`` are test and the ``round(valid * period)`` before them valid.

    ``interleave_split(i, 0.1, 0.1, 10)`` is the Turkish Web Treebank package's rule (``i % 10 == 8``
    dev, ``== 9`` test).
    """
    n_test, n_valid = round(test * period), round(valid * period)
    slot = item % period
    if slot >= period - n_test:
        return "test"
    if slot >= period - n_test - n_valid:
        return "valid"
    return "train"


def stratified_assignment(keys: list, valid: float, test: float) -> list[str]:
    """Splits for ``keys`` (already in their random order): rank ``r`` of ``n`` goes to valid if
    ``(r + 0.5) / n < valid``, else test if below ``valid + test``, else train."""
    n = len(keys)
    out = []
    for r in range(n):
        u = (r + 0.5) / n
        out.append("valid" if u < valid else "test" if u < valid + test else "train")
    return out


def _split_sort_key(record, seed):
    return hashlib.sha256(f"{seed}\x00{record['source']}\x00{record['line']}".encode("utf-8")).hexdigest()


def _assign_split(record, method, valid, test, seed, period):
    if record["split"] is not None:
        return record
    out = dict(record)
    if method == "interleave":
        out["split"] = interleave_split(record["item"], valid, test, period)
    elif "group" in record:  # e.g. all pronunciations of one word: one split
        out["split"] = hash_split("group", record["group"], valid, test, seed)
    else:
        out["split"] = hash_split(record["source"], record["line"], valid, test, seed)
    return out


def _stratify(label_and_keys, valid, test):
    _, keys = label_and_keys
    keys = sorted(keys)  # (hash, index): a deterministic random order
    for (_, index), split in zip(keys, stratified_assignment(keys, valid, test)):
        yield index, split


def _join_split(index_and_groups):
    _, groups = index_and_groups
    (record,), (split,) = groups["record"], groups["split"]
    out = dict(record)
    out["split"] = split
    return out


class AssignSplit(beam.PTransform):
    """Gives records without a split (``split`` is ``None``) one; others pass unchanged.

    Methods: ``hash`` (:func:`hash_split` of source and line), ``interleave`` (:func:`interleave_split`
    of the record's position in its source) and ``stratified`` (per ``label``, records ordered by a
    hash of source and line and cut at the fractions: :func:`stratified_assignment`). The
    stratified split groups only ``(hash, index)`` keys per label, then joins the splits back.
    """

    def __init__(self, valid: float, test: float, seed: int = 0, method: str = "hash", period: int = 10):
        super().__init__()
        if valid < 0 or test < 0 or valid + test >= 1:
            raise ValueError(f"split fractions valid={valid}, test={test} must be >= 0 and sum below 1")
        if method not in ("hash", "interleave", "stratified"):
            raise ValueError(f"unknown split method {method!r}; use hash, interleave or stratified")
        self.valid, self.test, self.seed, self.method, self.period = valid, test, seed, method, period

    def expand(self, records):
        if self.method != "stratified":
            return records | "Split" >> beam.Map(
                _assign_split, self.method, self.valid, self.test, self.seed, self.period
            )
        given = records | "HasSplit" >> beam.Filter(lambda r: r["split"] is not None)
        todo = records | "NeedsSplit" >> beam.Filter(lambda r: r["split"] is None)
        splits = (
            todo
            | "KeyByLabel" >> beam.Map(lambda r, seed: (r["label"], (_split_sort_key(r, seed), r["index"])), self.seed)
            | "GroupByLabel" >> beam.GroupByKey()
            | "Stratify" >> beam.FlatMap(_stratify, self.valid, self.test)
        )
        assigned = (
            {"record": todo | "KeyByIndex" >> beam.Map(lambda r: (r["index"], r)), "split": splits}
            | "JoinSplit" >> beam.CoGroupByKey()
            | "SetSplit" >> beam.Map(_join_split)
        )
        return (given, assigned) | "Merge" >> beam.Flatten()


# ----------------------------------------------------------------------------- rejects and dupes
class SplitRejected(beam.PTransform):
    """Corpus records → ``(accepted, rejected)``: records with a ``reason`` (unreadable input) are rejected."""

    def expand(self, records):
        accepted, rejected = records | "ByReason" >> beam.Partition(lambda r, n: 1 if "reason" in r else 0, 2)
        return accepted, rejected


def content_key(record) -> str:
    """sha256 of what makes two records the same example: the raw text, or the tokens and tags."""
    h = hashlib.sha256()
    if "raw" in record:
        h.update(record["raw"])
        if "target_raw" in record:
            h.update(b"\x01" + record["target_raw"])
    else:
        h.update("\x00".join(record["tokens"]).encode("utf-8"))
        h.update(b"\x01")
        h.update("\x00".join(record.get("tags", [])).encode("utf-8"))
    return h.hexdigest()


def _keep_first(key_and_records):
    _, records = key_and_records
    records = sorted(records, key=operator.itemgetter("index"))
    first = records[0]
    yield first
    for r in records[1:]:
        Metrics.counter(NAMESPACE, f"rejected_{DUPLICATE}").inc()
        label = f" (labelled {r.get('label')!r} there: {first.get('label')!r})" if r.get("label") != first.get("label") else ""
        text = r["raw"].decode("utf-8", "backslashreplace") if "raw" in r else " ".join(r["tokens"])
        yield reject(r, DUPLICATE, f"same content as {first['source']}:{first['line']}{label}", text)


def _log_duplicates(n):
    if n:
        log.info("set aside %d exact duplicate(s) before splitting", n)
    return n


class DropDuplicates(beam.PTransform):
    """Keeps the first record (corpus order) of every group of identical content (:func:`content_key`);
    the others go to output ``rejected`` with reason ``duplicate``, naming the record they repeat.
    Run before the split, so that no text is in two splits. Returns ``(kept, rejected)``."""

    def expand(self, records):
        out = (
            records
            | "KeyByContent" >> beam.Map(lambda r: (content_key(r), r))
            | "GroupByContent" >> beam.GroupByKey()
            | "KeepFirst" >> beam.FlatMap(_keep_first).with_outputs(REJECTED, main=ACCEPTED)
        )
        _ = out[REJECTED] | "Count" >> beam.combiners.Count.Globally() | "Log" >> beam.Map(_log_duplicates)
        return out[ACCEPTED], out[REJECTED]


def _hash_order(record):
    return _split_sort_key(record, "max_lines"), record["index"]


class TakeFirstPerSplit(beam.PTransform):
    """Keeps the first ``max_lines[split]`` records of each listed split.

    ``order="corpus"``: by ``index`` (corpus order: what a language model's stream needs).
    ``order="hash"``: by a hash of source and line, a fixed pseudo-random order, so that a corpus
    stored class by class (``bbc``, ``folder``) keeps every class. Splits not listed in
    ``max_lines`` pass through whole. Deterministic on every runner.
    """

    def __init__(self, max_lines: dict[str, int] | None, order: str = "corpus"):
        super().__init__()
        if order not in ("corpus", "hash"):
            raise ValueError(f"order must be 'corpus' or 'hash', got {order!r}")
        self.order = order
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
                | f"First[{split}]" >> beam.combiners.Top.Smallest(
                    self.max_lines[split], key=operator.itemgetter("index") if self.order == "corpus" else _hash_order
                )
                | f"Unpack[{split}]" >> beam.FlatMap(lambda rs: rs)
            )
        return tuple(parts) | "Merge" >> beam.Flatten()


# -------------------------------------------------------------------------------------- tokenize
def _preview(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def reject(record: dict, reason: str, detail: str, text: str) -> TaggedOutput:
    """``record`` as a rejected record on the ``rejected`` output."""
    return TaggedOutput(
        REJECTED,
        {"index": record["index"], "split": record["split"], "source": record["source"], "line": record["line"],
         "reason": reason, "detail": detail, "text": _preview(text)},
    )


def _check_max_token_chars(max_token_chars) -> int:
    if isinstance(max_token_chars, bool) or not isinstance(max_token_chars, int) or max_token_chars < 1:
        raise ValueError(f"max_token_chars must be an int >= 1, got {max_token_chars!r}")
    return max_token_chars


def _utf8_error_detail(record: dict, raw: bytes, err: UnicodeDecodeError, what: str) -> str:
    """``line N: invalid UTF-8 at byte B of the <what> (reason)``; ``N`` is the file line of the
    bad byte: the record's ``line`` plus the line breaks before it (a document spans lines)."""
    number = record["line"] + raw.count(b"\n", 0, err.start)
    return f"line {number}: invalid UTF-8 at byte {err.start} of the {what} ({err.reason})"


class TokenizeBatchDoFn(beam.DoFn):
    """Decodes, normalizes and tokenizes a *list* of corpus records in one TensorFlow call.

    Main output: tokenized records. Tagged output ``rejected``: records that are not valid UTF-8
    (``detail`` names the file line and the byte offset in the text), are empty after normalization
    (no token, or only whitespace tokens at character level), have more than ``max_length`` tokens,
    or hold a token (after normalization) of more than ``max_token_chars`` characters
    (``token_too_long``: one such token rejects the whole record, so it never reaches the
    vocabulary). Both limits apply to both sides of a pair (``target_config``); at character level
    every token is one character, so ``max_token_chars`` never rejects there.
    """

    def __init__(self, tokenizer_config: TokenizerConfig, max_length: int, log_every: int = 100_000,
                 target_config: TokenizerConfig | None = None, max_token_chars: int = DEFAULT_MAX_TOKEN_CHARS):
        self.tokenizer_config = tokenizer_config
        self.target_config = target_config
        self.max_length = max_length
        self.max_token_chars = _check_max_token_chars(max_token_chars)
        self.log_every = log_every
        self._tokenizer = None
        self._target_tokenizer = None

    def setup(self):
        self._tokenizer = Tokenizer(self.tokenizer_config)
        if self.target_config is not None:
            self._target_tokenizer = Tokenizer(self.target_config)
        self._seen = 0
        self._lines = Metrics.counter(NAMESPACE, "lines_tokenized")
        self._accepted = Metrics.counter(NAMESPACE, "lines_accepted")
        self._tokens = Metrics.counter(NAMESPACE, "tokens_accepted")
        self._rejected = {r: Metrics.counter(NAMESPACE, f"rejected_{r}") for r in REJECT_REASONS}

    def _reject(self, record: dict, reason: str, detail: str, text: str):
        self._rejected[reason].inc()
        return reject(record, reason, detail, text)

    def _normalize(self, records: list[dict]):
        """Pre-tokenized records: every token normalized (one TF call for the batch), never split."""
        flat = [t for r in records for t in r["tokens"]]
        normalized = iter(self._tokenizer.normalize_batch_py(flat))
        for record in records:
            tokens = [next(normalized) for _ in record["tokens"]]
            empty = [i for i, t in enumerate(tokens) if not t.strip()]
            if empty:
                yield self._reject(record, EMPTY, f"token {empty[0] + 1} is empty after normalization",
                                   " ".join(record["tokens"]))
            elif len(tokens) > self.max_length:
                yield self._reject(record, TOO_LONG, f"{len(tokens)} tokens > max_length {self.max_length}",
                                   " ".join(record["tokens"]))
            elif (long := self._long_token(tokens)) is not None:
                yield self._reject(record, TOKEN_TOO_LONG, long, " ".join(record["tokens"]))
            else:
                yield self._accept(record, tokens)

    def _long_token(self, tokens: list[str]) -> str | None:
        """The detail for the first token longer than ``max_token_chars``, or ``None``."""
        if not tokens or max(map(len, tokens)) <= self.max_token_chars:  # the common case, without a Python loop
            return None
        for i, token in enumerate(tokens):
            if len(token) > self.max_token_chars:
                preview = token if len(token) <= TOKEN_PREVIEW_CHARS else token[:TOKEN_PREVIEW_CHARS] + "..."
                return f"token {i + 1} has {len(token)} characters > max_token_chars {self.max_token_chars}: {preview!r}"
        return None

    def _accept(self, record: dict, tokens: list[str]) -> dict:
        self._accepted.inc()
        self._tokens.inc(len(tokens))
        out = {k: v for k, v in record.items() if k != "raw"}
        out["tokens"] = tokens
        return out

    def _tokenize(self, texts: list[str], tokenizer) -> list[list[str] | Exception]:
        try:
            return tokenizer.tokenize_batch_py(texts)
        except Exception:  # one bad line must not sink the batch: retry one by one
            out: list[list[str] | Exception] = []
            for text in texts:
                try:
                    out.append(tokenizer.tokenize_py(text))
                except Exception as err:  # noqa: BLE001 - reported as a rejection reason
                    out.append(err)
            return out

    def _tokenize_side(self, records: list[dict], key: str, tokenizer, side: str = "", what: str = "text"):
        """``(accepted [(record, tokens)], rejections)`` for the texts ``record[key]`` (bytes)."""
        accepted, rejections, valid = [], [], []
        for record in records:
            try:
                valid.append((record, record[key].decode("utf-8")))
            except UnicodeDecodeError as err:
                rejections.append(self._reject(record, INVALID_UTF8, _utf8_error_detail(record, record[key], err, what),
                                               record[key].decode("utf-8", "backslashreplace")))
        results = self._tokenize([text for _, text in valid], tokenizer) if valid else []
        for (record, text), tokens in zip(valid, results):
            if isinstance(tokens, Exception):
                rejections.append(self._reject(record, TOKENIZER_ERROR, f"{side}{type(tokens).__name__}: {tokens}"[:500], text))
            elif not any(t.strip() for t in tokens):
                rejections.append(self._reject(record, EMPTY, f"{side}no token after normalization", text))
            elif len(tokens) > self.max_length:
                rejections.append(self._reject(record, TOO_LONG, f"{side}{len(tokens)} tokens > max_length {self.max_length}", text))
            elif (long := self._long_token(tokens)) is not None:
                rejections.append(self._reject(record, TOKEN_TOO_LONG, f"{side}{long}", text))
            else:
                accepted.append((record, tokens))
        return accepted, rejections

    def process(self, batch):
        pretokenized = [r for r in batch if "raw" not in r]
        if pretokenized:
            yield from self._normalize(pretokenized)
            batch_raw = [r for r in batch if "raw" in r]
        else:
            batch_raw = batch
        accepted, rejections = self._tokenize_side(batch_raw, "raw", self._tokenizer)
        yield from rejections
        if self._target_tokenizer is not None:  # parallel pairs: the target side has its own tokenizer
            source_tokens = {id(record): tokens for record, tokens in accepted}
            pairs, rejections = self._tokenize_side([r for r, _ in accepted], "target_raw", self._target_tokenizer,
                                                    "target: ", "target text")
            yield from rejections
            for record, target_tokens in pairs:
                out = self._accept(record, source_tokens[id(record)])
                del out["target_raw"]
                out["target_tokens"] = target_tokens
                yield out
        else:
            for record, tokens in accepted:
                yield self._accept(record, tokens)
        self._lines.inc(len(batch))
        before, self._seen = self._seen, self._seen + len(batch)
        if self._seen // self.log_every != before // self.log_every:
            log.info("tokenized %d lines (this worker)", self._seen)


class TokenizeLines(beam.PTransform):
    """Batches corpus records and tokenizes them; returns outputs ``accepted`` (main) and ``rejected``.

    ``max_length`` (tokens per record) and ``max_token_chars`` (characters per token) are the
    limits of :class:`TokenizeBatchDoFn`.

    Example::

        out = records | TokenizeLines(TokenizerConfig(), max_length=100, max_token_chars=100)
        out.accepted, out.rejected
    """

    def __init__(self, tokenizer_config: TokenizerConfig, max_length: int, min_batch_size=256, max_batch_size=2048,
                 target_config: TokenizerConfig | None = None, max_token_chars: int = DEFAULT_MAX_TOKEN_CHARS):
        super().__init__()
        self.target_config = target_config
        self.tokenizer_config = tokenizer_config
        self.max_length = max_length
        self.max_token_chars = _check_max_token_chars(max_token_chars)
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size

    def expand(self, records):
        return (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=self.min_batch_size, max_batch_size=self.max_batch_size)
            | "Tokenize"
            >> beam.ParDo(TokenizeBatchDoFn(self.tokenizer_config, self.max_length, target_config=self.target_config,
                                            max_token_chars=self.max_token_chars)).with_outputs(
                REJECTED, main=ACCEPTED
            )
        )


# ----------------------------------------------------------------------------------------- vocab
class _CountValues(beam.PTransform):
    """``(value, count)`` over the values ``self.values(record)`` of one split's records (``None``: all)."""

    def __init__(self, split: str | None = "train"):
        super().__init__()
        self.split = split

    def values(self, record):
        raise NotImplementedError

    def expand(self, records):
        if self.split is not None:
            records = records | f"Only[{self.split}]" >> beam.Filter(lambda r, s: r["split"] == s, self.split)
        return (
            records
            | "Values" >> beam.FlatMap(self.values)
            | "Count" >> beam.combiners.Count.PerElement()
        )


class CountTokens(_CountValues):
    """``(token, count)`` over the tokenized records of one split (default: train only); ``field``
    names the token list (``target_tokens`` for the target side of pairs)."""

    def __init__(self, split: str | None = "train", field: str = "tokens"):
        super().__init__(split)
        self.field = field

    def values(self, record):
        return record[self.field]


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
        yield {"index": record["index"], "split": record["split"], "features": {"ids": ids}, "unk": unk, "labels": []}


class EncodeForLM(beam.PTransform):
    def __init__(self, vocab):
        """``vocab``: a PCollection holding one :class:`Vocabulary` (from :class:`BuildVocabulary`)."""
        super().__init__()
        self.vocab = vocab

    def expand(self, records):
        return records | "Encode" >> beam.ParDo(EncodeForLMDoFn(), beam.pvalue.AsSingleton(self.vocab))


class CountLabels(_CountValues):
    """``(label, count)`` over one split's records: every tag of a tagging record, or the ``label``."""

    def values(self, record):
        return record["tags"] if "tags" in record else [record["label"]]


def _build_label_set(pairs, what):
    """A :class:`LabelSet`, or ``None`` when the training split has no examples (every record is then
    rejected by :class:`EncodeExamples`, and the prepare job reports the empty corpus with its
    sources and rejection reasons)."""
    if not pairs:
        log.warning("the training split has no %s: every record will be rejected", what)
        return None
    labels = LabelSet.from_labels(label for label, _ in pairs)
    log.info("%s: %d (%s)", what, len(labels), ", ".join(labels.labels[:20]))
    return labels


class BuildLabelSet(beam.PTransform):
    """``(label, count)`` pairs → a one-element PCollection holding a :class:`LabelSet` (use ``AsSingleton``)."""

    def __init__(self, what: str = "labels"):
        super().__init__()
        self.what = what

    def expand(self, counts):
        return counts | "Gather" >> beam.combiners.ToList() | "FromLabels" >> beam.Map(_build_label_set, self.what)


class CountCharacters(_CountValues):
    """``(character, count)`` over the tokens of one split (for a character vocabulary)."""

    def values(self, record):
        return [c for t in record["tokens"] for c in t]


class EncodeExamplesDoFn(beam.DoFn):
    """Tagging / classification records → schema features; a tag or label outside the training set
    is a ``rejected`` record (``unknown_tag`` / ``unknown_label``), never remapped.

    Side inputs: the token :class:`Vocabulary`, the :class:`LabelSet` and, for tagging with
    character features, the character :class:`Vocabulary` (else ``None``).
    """

    def __init__(self, task: str):
        if task not in ("tagging", "classification", "seq2seq"):
            raise ValueError(f"EncodeExamples encodes tagging, classification or seq2seq records, not {task!r}")
        self.task = task

    def setup(self):
        self._unknown = Metrics.counter(NAMESPACE, f"rejected_{UNKNOWN_TAG if self.task == 'tagging' else UNKNOWN_LABEL}")

    def process(self, record, vocab, labels, chars=None):
        if self.task == "seq2seq":  # ``labels`` is the target vocabulary; unknown targets become <unk>
            ids = vocab.encode(record["tokens"])
            yield {"index": record["index"], "split": record["split"],
                   "features": {"source_ids": ids, "target_ids": labels.encode(record["target_tokens"])},
                   "unk": sum(1 for i in ids if i == UNK_ID), "labels": []}
            return
        names = record["tags"] if self.task == "tagging" else [record["label"]]
        unknown = labels.unknown(names) if labels is not None else names
        if unknown:
            self._unknown.inc()
            what = UNKNOWN_TAG if self.task == "tagging" else UNKNOWN_LABEL
            known = f"the training split's {len(labels)}" if labels is not None else "the training split, which is empty"
            detail = f"{what.split('_')[1]}(s) {unknown[:10]} not in {known}"
            yield reject(record, what, detail, " ".join(record["tokens"]))
            return
        ids = vocab.encode(record["tokens"])
        features = {"ids": ids}
        if self.task == "tagging":
            features["tags"] = labels.encode(record["tags"])
            if chars is not None:
                features["chars"] = [i for t in record["tokens"] for i in chars.encode(t)]
                features["char_lengths"] = [len(t) for t in record["tokens"]]
        else:
            features["label"] = labels.encode(names)[0]
        yield {"index": record["index"], "split": record["split"], "features": features,
               "unk": sum(1 for i in ids if i == UNK_ID), "labels": names}


class EncodeExamples(beam.PTransform):
    """Encodes tagging / classification records; returns outputs ``accepted`` (main) and ``rejected``.

    Args:
        task: ``"tagging"`` or ``"classification"``.
        vocab, labels: one-element PCollections (:class:`BuildVocabulary`, :class:`BuildLabelSet`).
        chars: optional one-element PCollection with the character :class:`Vocabulary`.
    """

    def __init__(self, task: str, vocab, labels, chars=None):
        super().__init__()
        self.task, self.vocab, self.labels, self.chars = task, vocab, labels, chars

    def expand(self, records):
        side = [beam.pvalue.AsSingleton(self.vocab), beam.pvalue.AsSingleton(self.labels)]
        if self.chars is not None:
            side.append(beam.pvalue.AsSingleton(self.chars))
        return records | "Encode" >> beam.ParDo(EncodeExamplesDoFn(self.task), *side).with_outputs(
            REJECTED, main=ACCEPTED
        )


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
    """Per-split stats and contiguous shard boundaries, from ``(index, length, unk, labels)`` values.

    Output: ``{"examples", "tokens", "unk_tokens", "oov_rate", "length_histogram", "label_counts",
    "num_shards", "boundaries"}`` where ``label_counts`` counts tags / labels (empty for LM), ``tokens`` counts every id written (``<eos>`` included), ``oov_rate`` is
    ``unk_tokens / tokens``, and ``boundaries[k]`` is the ``index`` of shard ``k``'s first record
    (shards hold equal numbers of consecutive records, up to one).
    """

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD):
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard

    def create_accumulator(self):
        return [0, 0, {}, [], {}]  # tokens, unk, histogram {bucket: n}, indices, label counts

    def add_input(self, acc, value):
        index, length, unk, labels = value
        acc[0] += length
        acc[1] += unk
        bucket = length_bucket(length)
        acc[2][bucket] = acc[2].get(bucket, 0) + 1
        acc[3].append(index)
        for label in labels:
            acc[4][label] = acc[4].get(label, 0) + 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out[0] += acc[0]
            out[1] += acc[1]
            for b, n in acc[2].items():
                out[2][b] = out[2].get(b, 0) + n
            out[3].extend(acc[3])
            for label, n in acc[4].items():
                out[4][label] = out[4].get(label, 0) + n
        return out

    def extract_output(self, acc):
        tokens, unk, hist, indices, label_counts = acc
        indices = sorted(indices)
        examples = len(indices)
        k = num_shards_for(tokens, examples, self.num_shards, self.tokens_per_shard)
        return {
            "examples": examples,
            "tokens": tokens,
            "unk_tokens": unk,
            "oov_rate": (unk / tokens) if tokens else 0.0,
            "length_histogram": {f"{b}-{2 * b - 1}": hist[b] for b in sorted(hist)},
            "label_counts": dict(sorted(label_counts.items())),
            "num_shards": k,
            "boundaries": [indices[(s * examples) // k] for s in range(k)],
        }


def _length(features: dict) -> int:
    """An example's length in ids: its tokens, or its source tokens for seq2seq."""
    return schema.example_length(features)


class SummarizeSplits(beam.PTransform):
    """Encoded records → ``(split, summary)`` (see :class:`SplitSummaryFn`) for every non-empty split."""

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD):
        super().__init__()
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard

    def expand(self, encoded):
        return (
            encoded
            | "KeyBySplit"
            >> beam.Map(lambda r: (r["split"], (r["index"], _length(r["features"]), r["unk"], r["labels"])))
            | "Summarize" >> beam.CombinePerKey(SplitSummaryFn(self.num_shards, self.tokens_per_shard))
        )


# ----------------------------------------------------------------------------------------- write
def _key_by_shard(record, summaries, task):
    summary = summaries[record["split"]]
    shard = bisect.bisect_right(summary["boundaries"], record["index"]) - 1
    serialized = schema.encode_example(task, record["features"])
    return (record["split"], shard, summary["num_shards"]), (record["index"], serialized, _length(record["features"]))


class WriteShardDoFn(beam.DoFn):
    """Writes one shard: its records sorted by ``index`` into ``<dir>/<split>-NNNNN-of-NNNNN.tfrecord.gz``.

    Yields ``{"name", "sha256", "bytes", "examples", "tokens"}``: the file's sha256 and size (hashed
    after it is closed, as the readers will see it) and the records and ids it holds, so the manifest
    can record them wherever the shard was written (any runner, any worker).
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, element):
        (split, shard, num_shards), values = element
        values = sorted(values, key=operator.itemgetter(0))
        name = schema.shard_name(split, shard, num_shards)
        path = os.path.join(self.output_dir, name)
        n = write_tfrecords(path, (v[1] for v in values))
        sha256, size = file_digest(path)
        Metrics.counter(NAMESPACE, "records_written").inc(n)
        log.info("wrote %s (%d records)", name, n)
        yield {"name": name, "sha256": sha256, "bytes": size, "examples": n, "tokens": sum(v[2] for v in values)}


class WriteShards(beam.PTransform):
    """Encoded records → sharded GZIP TFRecords honouring the order contract; yields one
    ``{"name", "sha256", "bytes", "examples", "tokens"}`` per shard (:class:`WriteShardDoFn`).

    Args:
        output_dir: directory to write into (``tf.io.gfile`` path).
        summaries: the ``(split, summary)`` PCollection from :class:`SummarizeSplits`.
        task: schema task of the records (their ``features`` follow ``schema.TASK_FEATURES[task]``).
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


def _write_vocabulary(vocab, output_dir, path):
    data = vocab.to_bytes() if vocab is not None else b""  # None: no training examples (an error later)
    write_bytes_atomic(os.path.join(output_dir, path), data)
    return {"path": path, "size": len(vocab) if vocab is not None else 0, "sha256": hashlib.sha256(data).hexdigest()}


class WriteVocabulary(beam.PTransform):
    """A one-element :class:`Vocabulary` / :class:`LabelSet` PCollection → ``<output_dir>/<path>``
    (default ``vocab/tokens.txt``); yields ``{"path", "size", "sha256"}``."""

    def __init__(self, output_dir: str, path: str = VOCAB_FILE):
        super().__init__()
        self.output_dir = output_dir
        self.path = path

    def expand(self, vocab):
        return vocab | "Write" >> beam.Map(_write_vocabulary, self.output_dir, self.path)


def _write_summary(_, path, splits, rejected, vocab, shards, **extra):
    summary = {
        **extra,
        "splits": {
            split: {k: v for k, v in s.items() if k != "boundaries"} for split, s in sorted(splits.items())
        },
        "rejected": rejected,
        "vocab": vocab,
        "shards": {info["name"]: {k: v for k, v in info.items() if k != "name"}
                   for info in sorted(shards, key=operator.itemgetter("name"))},
    }
    write_bytes_atomic(path, json.dumps(summary, sort_keys=True).encode("utf-8"))
    return path


class WriteSummary(beam.PTransform):
    """Gathers split summaries, rejected and vocabulary summaries and shard infos (``"shards": {name:
    {"sha256", "bytes", "examples", "tokens"}}``) into one JSON file;
    ``extra`` maps more keys to one-element PCollections (e.g. ``labels``, ``chars`` file summaries)."""

    def __init__(self, path: str, splits, rejected, vocab, shards, extra: dict | None = None):
        super().__init__()
        self.path = path
        self.splits, self.rejected, self.vocab, self.shards = splits, rejected, vocab, shards
        self.extra = dict(extra or {})

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
                **{k: beam.pvalue.AsSingleton(v) for k, v in self.extra.items()},
            )
        )
