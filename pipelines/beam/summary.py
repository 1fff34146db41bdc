"""The job's summary file: split summaries, rejected and vocabulary summaries and shard infos, gathered
into one JSON file (what the manifest is built from)."""

from __future__ import annotations

import json
import operator

import apache_beam as beam

from pipelines.beam.files import write_bytes_atomic


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
