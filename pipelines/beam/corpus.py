"""Reading the corpus: the sources, read in workers, into corpus records (see :mod:`pipelines.beam`)."""

from __future__ import annotations

import hashlib
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam.names import NAMESPACE
from pipelines.beam.rejects import preview
from pipelines.datasets import CorpusSource

log = logging.getLogger(__name__)


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
                      "reason": item["reject"], "detail": item["detail"], "text": preview(item["text"])}
        yield record
    Metrics.counter(NAMESPACE, "items_read").inc(n)
    log.info("read %d items from %s", n, source.name)


class ReadCorpus(beam.PTransform):
    """Reads the sources (in workers) into corpus records, then redistributes them.

    Items a reader could not parse come out in the rejected-record shape (they have ``reason``);
    :class:`~pipelines.beam.rejects.SplitRejected` sets them apart.

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
