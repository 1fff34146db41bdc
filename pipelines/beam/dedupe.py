"""Exact-duplicate removal before the split: the first record of each content wins, the others are
rejected (``duplicate``)."""

from __future__ import annotations

import hashlib
import logging
import operator

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam.names import NAMESPACE
from pipelines.beam.rejects import DUPLICATE, SplitRejected, reject

log = logging.getLogger(__name__)


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
    the others are rejected with reason ``duplicate``, naming the record they repeat. Run before the
    split, so that no text is in two splits. Returns a :class:`~pipelines.beam.rejects.Split`
    ``(accepted, rejected)``."""

    def expand(self, records):
        out = (
            records
            | "KeyByContent" >> beam.Map(lambda r: (content_key(r), r))
            | "GroupByContent" >> beam.GroupByKey()
            | "KeepFirst" >> beam.FlatMap(_keep_first)
            | "SetAside" >> SplitRejected()
        )
        # a log line only: a runner that runs just what the job's outputs need (DaskRunner) may skip it
        _ = out.rejected | "Count" >> beam.combiners.Count.Globally() | "Log" >> beam.Map(_log_duplicates)
        return out
