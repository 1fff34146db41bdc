"""WriteShards (:mod:`pipelines.beam.shards`): corpus order across shards, shard infos, byte-identical output."""

import os

import apache_beam as beam
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline
from pipelines.beam.shards import WriteShards
from pipelines.beam.stats import SummarizeSplits
from preprocessing import schema
from preprocessing.vocab import EOS_ID

LM = {"ids": schema.SEQUENCE}  # the records' feature spec (the lm task's)


def _read_split(directory, split):
    files = sorted(tf.io.gfile.glob(os.path.join(directory, f"{split}-?????-of-?????{schema.SHARD_SUFFIX}")))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(lambda s: schema.parse_example(LM, s))
    return files, [ex["ids"].numpy().tolist() for ex in ds]


def _shard_info_matches_file(info, directory):
    """WriteShards' ``{"name", "sha256", "bytes", "examples", "tokens"}`` against the file it names."""
    import hashlib

    path = os.path.join(directory, info["name"])
    data = open(path, "rb").read()
    ids = [schema.parse_example(LM, r)["ids"].numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    return (info["sha256"], info["bytes"], info["examples"], info["tokens"]) == (
        hashlib.sha256(data).hexdigest(), len(data), len(ids), sum(len(i) for i in ids))


def _write_shards(directory, records, num_shards):
    with pipeline() as p:
        encoded = p | "Records" >> beam.Create(records)
        summaries = encoded | SummarizeSplits(num_shards=num_shards)
        infos = encoded | WriteShards(str(directory), summaries, LM)
        assert_that(
            infos | "Names" >> beam.Map(lambda info: info["name"]),
            equal_to([schema.shard_name("train", i, num_shards) for i in range(num_shards)]
                     + [schema.shard_name("valid", 0, 1)]),
        )
        assert_that(infos | "Check" >> beam.Map(_shard_info_matches_file, str(directory)),
                    equal_to([True] * (num_shards + 1)), label="ShardInfos")


def test_write_shards_keeps_corpus_order_across_shards_and_is_byte_identical(tmp_path):
    train = [{"index": (i // 4, i % 4), "split": "train", "features": {"ids": [10 + i, EOS_ID]}, "unk": 0, "labels": [],
              "unseen": []} for i in range(10)]
    valid = [{"index": (9, 1), "split": "valid", "features": {"ids": [7, EOS_ID]}, "unk": 0, "labels": [],
              "unseen": []}]
    records = list(reversed(train)) + valid  # arrival order must not matter
    _write_shards(tmp_path / "a", records, num_shards=3)
    files, ids = _read_split(tmp_path / "a", "train")
    assert [os.path.basename(f) for f in files] == [schema.shard_name("train", i, 3) for i in range(3)]
    assert ids == [r["features"]["ids"] for r in train]
    assert _read_split(tmp_path / "a", "valid")[1] == [[7, EOS_ID]]
    _write_shards(tmp_path / "b", train + valid, num_shards=3)
    for name in sorted(os.listdir(tmp_path / "a")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not [n for n in os.listdir(tmp_path / "a") if ".tmp-" in n]


def test_write_shards_takes_a_feature_spec_not_a_task_name(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="a feature spec is a non-empty mapping"):
        WriteShards(str(tmp_path), None, "lm")
    assert WriteShards(str(tmp_path), None, LM).features == {"ids": "sequence"}
