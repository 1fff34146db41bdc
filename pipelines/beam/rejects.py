"""Rejected records: the reasons, the record shape (``{"index", "split", "source", "line", "reason",
"detail", "text"}``), setting them apart and writing them all to one JSONL file.

A step that rejects records emits them in its one output, beside the records it accepts: a rejected
record is a plain dict with a ``reason`` key, which no corpus, tokenized or encoded record has, and
:class:`SplitRejected` sets them apart. No step of the prepare job uses a multi-output ``ParDo``
(``with_outputs`` / ``TaggedOutput``, or ``beam.Partition``, which is one): Beam 2.77's DaskRunner
hands every output of such a ``ParDo`` to every consumer, so rejected records would reach the
accepted side and the other way round.

Reasons: :data:`REJECT_REASONS` here, the readers' (``pipelines/readers.py``) for unreadable input.
"""

from __future__ import annotations

import json
import logging
import operator
import os
from typing import NamedTuple

import apache_beam as beam

from pipelines.beam.files import write_bytes_atomic
from pipelines.beam.names import REJECTED_FILE, UNKNOWN_LABEL, UNKNOWN_TAG

log = logging.getLogger(__name__)

INVALID_UTF8, EMPTY, TOO_LONG, TOKENIZER_ERROR = "invalid_utf8", "empty", "too_long", "tokenizer_error"
TOKEN_TOO_LONG = "token_too_long"
DUPLICATE = "duplicate"
REJECT_REASONS = (INVALID_UTF8, EMPTY, TOO_LONG, TOKEN_TOO_LONG, TOKENIZER_ERROR, DUPLICATE, UNKNOWN_TAG,
                  UNKNOWN_LABEL)


def preview(text: str, limit: int = 2000) -> str:
    """``text``, cut to ``limit`` characters with a note of how many more there were."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def reject(record: dict, reason: str, detail: str, text: str) -> dict:
    """``record`` as a rejected record: ``{"index", "split", "source", "line", "reason", "detail", "text"}``
    (``text`` cut by :func:`preview`); emit it in the step's output, :class:`SplitRejected` sets it apart."""
    return {"index": record["index"], "split": record["split"], "source": record["source"], "line": record["line"],
            "reason": reason, "detail": detail, "text": preview(text)}


def is_rejected(record: dict) -> bool:
    """Whether ``record`` is a rejected record (it has a ``reason``)."""
    return "reason" in record


class Split(NamedTuple):
    """What :class:`SplitRejected` returns: the ``accepted`` and the ``rejected`` PCollections (it
    unpacks as ``accepted, rejected``)."""

    accepted: beam.PCollection
    rejected: beam.PCollection


class SplitRejected(beam.PTransform):
    """Records → :class:`Split` ``(accepted, rejected)``: the records with a ``reason`` (:func:`reject`,
    or unreadable input from the readers) are rejected, the others accepted.

    Two filters over the one input, not a multi-output ``ParDo`` (see the module docstring).
    """

    def expand(self, records):
        return Split(
            accepted=records | "Accepted" >> beam.Filter(lambda r: "reason" not in r),  # no annotations: Beam
            rejected=records | "Rejected" >> beam.Filter(lambda r: "reason" in r),  # would read them as hints
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
