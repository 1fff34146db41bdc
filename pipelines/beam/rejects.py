"""Rejected records: the reasons, the record shape (``{"index", "split", "source", "line", "reason",
"detail", "text"}``), setting unreadable records apart and writing them all to one JSONL file.

Reasons: :data:`REJECT_REASONS` here, the readers' (``pipelines/readers.py``) for unreadable input.
"""

from __future__ import annotations

import json
import logging
import operator
import os

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from pipelines.beam.files import write_bytes_atomic
from pipelines.beam.names import REJECTED, REJECTED_FILE, UNKNOWN_LABEL, UNKNOWN_TAG

log = logging.getLogger(__name__)

INVALID_UTF8, EMPTY, TOO_LONG, TOKENIZER_ERROR = "invalid_utf8", "empty", "too_long", "tokenizer_error"
TOKEN_TOO_LONG = "token_too_long"
DUPLICATE = "duplicate"
REJECT_REASONS = (INVALID_UTF8, EMPTY, TOO_LONG, TOKEN_TOO_LONG, TOKENIZER_ERROR, DUPLICATE, UNKNOWN_TAG,
                  UNKNOWN_LABEL)


def preview(text: str, limit: int = 2000) -> str:
    """``text``, cut to ``limit`` characters with a note of how many more there were."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def reject(record: dict, reason: str, detail: str, text: str) -> TaggedOutput:
    """``record`` as a rejected record on the ``rejected`` output."""
    return TaggedOutput(
        REJECTED,
        {"index": record["index"], "split": record["split"], "source": record["source"], "line": record["line"],
         "reason": reason, "detail": detail, "text": preview(text)},
    )


class SplitRejected(beam.PTransform):
    """Corpus records → ``(accepted, rejected)``: records with a ``reason`` (unreadable input) are rejected."""

    def expand(self, records):
        accepted, rejected = records | "ByReason" >> beam.Partition(lambda r, n: 1 if "reason" in r else 0, 2)
        return accepted, rejected


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
