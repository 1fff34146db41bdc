"""Per-split summaries and shard counts (:mod:`pipelines.beam.stats`)."""

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline
from pipelines.beam.stats import SummarizeSplits, num_shards_for
from preprocessing.vocab import EOS_ID


def _encoded(index, split, n, unk=0):
    return {"index": (0, index), "split": split, "features": {"ids": [4] * (n - 1) + [EOS_ID]}, "unk": unk, "labels": []}


def test_summarize_splits_stats_and_contiguous_boundaries():
    records = [_encoded(i, "train", i, unk=1) for i in range(1, 6)] + [_encoded(9, "valid", 8)]
    with pipeline() as p:
        out = p | beam.Create(records) | SummarizeSplits(num_shards=2)
        assert_that(
            out,
            equal_to(
                [
                    (
                        "train",
                        {
                            "examples": 5,
                            "tokens": 15,
                            "unk_tokens": 5,
                            "oov_rate": 5 / 15,
                            "length_histogram": {"1-1": 1, "2-3": 2, "4-7": 2},
                            "label_counts": {},
                            "num_shards": 2,
                            "boundaries": [(0, 1), (0, 3)],
                        },
                    ),
                    (
                        "valid",
                        {
                            "examples": 1,
                            "tokens": 8,
                            "unk_tokens": 0,
                            "oov_rate": 0.0,
                            "length_histogram": {"8-15": 1},
                            "label_counts": {},
                            "num_shards": 1,  # at most one shard per example
                            "boundaries": [(0, 9)],
                        },
                    ),
                ]
            ),
        )


def test_num_shards_auto_and_capped():
    assert num_shards_for(tokens=2_500_000, examples=100, requested=0) == 3
    assert num_shards_for(tokens=10, examples=100, requested=0) == 1
    assert num_shards_for(tokens=10, examples=2, requested=4) == 2
    assert num_shards_for(tokens=0, examples=0, requested=4) == 0
