"""Writing encoded records into sharded GZIP TFRecord files, each shard's records in corpus order."""

from __future__ import annotations

import bisect
import logging
import operator
import os

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam.files import write_tfrecords
from pipelines.beam.names import NAMESPACE
from preprocessing import schema
from preprocessing.manifest import file_digest

log = logging.getLogger(__name__)


def _key_by_shard(record, summaries, features):
    summary = summaries[record["split"]]
    shard = bisect.bisect_right(summary["boundaries"], record["index"]) - 1
    serialized = schema.encode_example(features, record["features"])
    length = schema.example_length(record["features"])
    return (record["split"], shard, summary["num_shards"]), (record["index"], serialized, length)


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
        summaries: the ``(split, summary)`` PCollection from :class:`~pipelines.beam.stats.SummarizeSplits`.
        features: the records' feature spec (``{name: kind}``, :mod:`preprocessing.schema`), from the task.
    """

    def __init__(self, output_dir: str, summaries, features):
        super().__init__()
        self.output_dir = output_dir
        self.summaries = summaries
        self.features = schema.check_spec(features)

    def expand(self, encoded):
        return (
            encoded
            | "KeyByShard" >> beam.Map(_key_by_shard, beam.pvalue.AsDict(self.summaries), self.features)
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShardDoFn(self.output_dir))
        )
