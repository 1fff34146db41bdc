"""Per-split summaries and shard counts (:mod:`pipelines.beam.stats`)."""

import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline
from pipelines.beam.stats import BLOCK_LINES, SplitSummaryFn, SummarizeSplits, num_shards_for
from preprocessing.vocab import EOS_ID


SUMMARY_KEYS = ("examples", "tokens", "unk_tokens", "oov_rate", "length_histogram", "label_counts", "unseen",
                "num_shards", "boundaries")


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
                            "unseen": {"examples": 0, "labels": {}},  # LM records hold no labels
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
                            "unseen": {"examples": 0, "labels": {}},
                            "num_shards": 1,  # at most one shard per example
                            "boundaries": [(0, 9)],
                        },
                    ),
                ]
            ),
        )


def test_summarize_splits_counts_records_with_labels_unseen_in_training():
    def labelled(index, split, labels, unseen):
        return {"index": (0, index), "split": split, "features": {"ids": [4] * len(labels), "tags": [0] * len(labels)},
                "unk": 0, "labels": labels, "unseen": unseen}

    records = [labelled(1, "train", ["DET", "NOUN"], []),
               labelled(2, "valid", ["INTJ", "NOUN", "INTJ"], ["INTJ", "INTJ"]),
               labelled(3, "valid", ["ADJ"], ["ADJ"]),
               labelled(4, "valid", ["NOUN"], [])]
    with pipeline() as p:
        out = p | beam.Create(records) | SummarizeSplits(num_shards=1)
        assert_that(
            out | beam.Map(lambda kv: (kv[0], kv[1]["examples"], kv[1]["label_counts"], kv[1]["unseen"])),
            equal_to([
                ("train", 1, {"DET": 1, "NOUN": 1}, {"examples": 0, "labels": {}}),
                # records holding an unseen label, and how often each unseen label occurs
                ("valid", 3, {"ADJ": 1, "INTJ": 2, "NOUN": 2}, {"examples": 2, "labels": {"ADJ": 1, "INTJ": 2}}),
            ]),
        )


def test_split_summary_takes_four_and_five_tuples():
    fn = SplitSummaryFn(num_shards=1)

    def summary(values):
        accs = []
        for chunk in (values[:1], values[1:]):  # two accumulators, merged: as a runner may
            acc = fn.create_accumulator()
            for v in chunk:
                acc = fn.add_input(acc, v)
            accs.append(acc)
        return fn.extract_output(fn.merge_accumulators(accs))

    four = summary([((0, 1), 2, 0, ["a", "b"]), ((0, 2), 1, 1, ["c"])])
    five = summary([((0, 1), 2, 0, ["a", "b"], []), ((0, 2), 1, 1, ["c"], ["c"])])
    assert four["unseen"] == {"examples": 0, "labels": {}}  # a 4-tuple holds no unseen labels
    assert five["unseen"] == {"examples": 1, "labels": {"c": 1}}
    assert {k: v for k, v in four.items() if k != "unseen"} == {k: v for k, v in five.items() if k != "unseen"}
    assert five["label_counts"] == {"a": 1, "b": 1, "c": 1} and five["unk_tokens"] == 1 and five["tokens"] == 3


def test_num_shards_auto_and_capped():
    assert num_shards_for(tokens=12_500_000, examples=10_000, requested=0) == 13  # one per ~1M tokens
    assert num_shards_for(tokens=2_500_000, examples=100, requested=0) == 8  # at least min_shards ...
    assert num_shards_for(tokens=2_500_000, examples=100, requested=0, min_shards=2) == 3
    assert num_shards_for(tokens=350_000, examples=100, requested=0) == 3  # ... of >= 100k tokens each
    assert num_shards_for(tokens=10, examples=100, requested=0) == 1
    assert num_shards_for(tokens=2_500_000, examples=5, requested=0) == 5  # at most one per example
    assert num_shards_for(tokens=10, examples=2, requested=4) == 2
    assert num_shards_for(tokens=0, examples=0, requested=4) == 0


@pytest.mark.parametrize("num_shards", [1, 3, 7, 40])
def test_shard_boundaries_equal_the_ranks_of_the_sorted_indices(num_shards):
    """Shards start at the records of rank k * n // num_shards, found through per-block counts:
    several sources, gaps in the line numbers, shards starting across and inside blocks."""
    rng = random.Random(num_shards)
    indices = sorted({(rng.randrange(3), rng.randrange(3 * BLOCK_LINES)) for _ in range(900)})
    records = [_encoded(line, "train", 2) | {"index": index} for line, index in enumerate(indices)]
    rng.shuffle(records)
    want = [indices[(k * len(indices)) // num_shards] for k in range(num_shards)]
    with pipeline() as p:
        out = p | beam.Create(records) | SummarizeSplits(num_shards=num_shards)
        assert_that(out | beam.Map(lambda kv: (kv[0], kv[1]["num_shards"], kv[1]["boundaries"], sorted(kv[1]))),
                    equal_to([("train", num_shards, want, sorted(SUMMARY_KEYS))]))


def test_split_summary_memory_is_per_block_not_per_record():
    fn = SplitSummaryFn(num_shards=2)
    acc = fn.create_accumulator()
    for line in range(3 * BLOCK_LINES):
        acc = fn.add_input(acc, ((0, line), 1, 0, []))
    assert acc[3] == {(0, 0): BLOCK_LINES, (0, 1): BLOCK_LINES, (0, 2): BLOCK_LINES}
    out = fn.extract_output(acc)
    # shard 1 starts at rank 3 * BLOCK_LINES // 2: inside block 1
    assert out["cuts"] == [((0, 0), 0), ((0, 1), BLOCK_LINES // 2)] and out["cut_blocks"] == {(0, 0), (0, 1)}
