"""Decoding, normalization and tokenization (tensorflow-text) of corpus records, one TensorFlow call per
batch; records that cannot be used are rejected with their reason.

The tokenizer is made in ``DoFn.setup()``; tokenization runs on batches of lines, since per-element
eager calls are slow. The batches come from :class:`BatchRecords`, a keyed grouping, not from
``beam.BatchElements``: that one emits each bundle's last batch from ``finish_bundle``, and Beam
2.77's DaskRunner drops whatever a DoFn emits there (it collects a partition's outputs before calling
``finish_bundle``), so on Dask those records would vanish without a trace.
"""

from __future__ import annotations

import hashlib
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam.names import NAMESPACE
from pipelines.beam.rejects import (EMPTY, INVALID_UTF8, REJECT_REASONS, TOKEN_TOO_LONG, TOKENIZER_ERROR, TOO_LONG,
                                    SplitRejected, reject)
from preprocessing.tokenizers import Tokenizer, TokenizerConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKEN_CHARS = 100  # DataConfig.max_token_chars' default
DEFAULT_BATCH_SIZE = 1024  # records per tokenizer call, on average
TOKEN_PREVIEW_CHARS = 40


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

    Outputs tokenized records and, beside them, rejected records (:func:`~pipelines.beam.rejects.reject`,
    with a ``reason``) for those that are not valid UTF-8
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


def batch_key(record: dict, count: int, batch_size: int) -> int:
    """The batch of ``record``: a hash of its ``index`` modulo ``ceil(count / batch_size)`` (the same on
    every runner and worker, whatever the order records arrive in)."""
    batches = max(1, -(-count // batch_size))
    digest = hashlib.sha256(repr(tuple(record["index"])).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % batches


class BatchRecords(beam.PTransform):
    """Records → lists of about ``batch_size`` records (:func:`batch_key`; the batches of a run depend
    only on the records, never on bundles, workers or timing).

    A count, a key per record and a ``GroupByKey``: unlike ``beam.BatchElements`` it emits nothing from
    ``finish_bundle``, which Beam 2.77's DaskRunner loses (see the module docstring).
    """

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size

    def expand(self, records):
        count = records | "Count" >> beam.combiners.Count.Globally()
        return (
            records
            | "KeyByBatch" >> beam.Map(lambda r, n, size: (batch_key(r, n, size), r),
                                       beam.pvalue.AsSingleton(count), self.batch_size)
            | "GroupByBatch" >> beam.GroupByKey()
            | "Lists" >> beam.Map(lambda kv: list(kv[1]))
        )


class TokenizeLines(beam.PTransform):
    """Batches corpus records (:class:`BatchRecords`) and tokenizes them; returns a
    :class:`~pipelines.beam.rejects.Split` ``(accepted, rejected)``.

    ``max_length`` (tokens per record) and ``max_token_chars`` (characters per token) are the
    limits of :class:`TokenizeBatchDoFn`; ``batch_size``: records per tokenizer call, on average.

    Example::

        out = records | TokenizeLines(TokenizerConfig(), max_length=100, max_token_chars=100)
        out.accepted, out.rejected
    """

    def __init__(self, tokenizer_config: TokenizerConfig, max_length: int, batch_size: int = DEFAULT_BATCH_SIZE,
                 target_config: TokenizerConfig | None = None, max_token_chars: int = DEFAULT_MAX_TOKEN_CHARS):
        super().__init__()
        self.target_config = target_config
        self.tokenizer_config = tokenizer_config
        self.max_length = max_length
        self.max_token_chars = _check_max_token_chars(max_token_chars)
        self.batch_size = batch_size

    def expand(self, records):
        return (
            records
            | "Batch" >> BatchRecords(self.batch_size)
            | "Tokenize"
            >> beam.ParDo(TokenizeBatchDoFn(self.tokenizer_config, self.max_length, target_config=self.target_config,
                                            max_token_chars=self.max_token_chars))
            | "SetAside" >> SplitRejected()
        )
