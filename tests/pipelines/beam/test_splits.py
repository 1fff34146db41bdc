"""The splits and TakeFirstPerSplit (:mod:`pipelines.beam.splits`)."""

import collections

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline, rec
from pipelines.beam.splits import AssignSplit, TakeFirstPerSplit, hash_split


def test_hash_split_is_pinned_and_proportional():
    # Pinned: the split of a line must never change between versions, runs or machines (sha256 of
    # "seed, source, line"; no Python hash()).
    code = {"train": ".", "valid": "v", "test": "t"}
    got = "".join(code[hash_split("corpus.txt", i, 0.3, 0.3, seed=0)] for i in range(1, 31))
    assert got == "t.tttv..vttt.vvvt.v.tv...vttv."
    assert hash_split("corpus.txt", 1, 0.0, 0.0) == "train"
    counts = collections.Counter(hash_split("f", i, 0.1, 0.2, seed=3) for i in range(20000))
    assert abs(counts["valid"] / 20000 - 0.1) < 0.01
    assert abs(counts["test"] / 20000 - 0.2) < 0.01
    other_seed = [hash_split("f", i, 0.1, 0.2, seed=4) for i in range(200)]
    assert other_seed != [hash_split("f", i, 0.1, 0.2, seed=3) for i in range(200)]


def test_assign_split_keeps_own_splits_and_hashes_the_rest():
    records = [rec(1, None, b"a"), rec(2, "valid", b"b"), rec(3, None, b"c")]
    expected = [
        dict(records[0], split=hash_split("s.txt", 1, 0.3, 0.3, 7)),
        records[1],
        dict(records[2], split=hash_split("s.txt", 3, 0.3, 0.3, 7)),
    ]
    with pipeline() as p:
        assert_that(p | beam.Create(records) | AssignSplit(0.3, 0.3, seed=7), equal_to(expected))


def test_take_first_per_split_keeps_corpus_order_prefix():
    records = [rec(i, "train" if i % 3 else "test", b"x") for i in range(1, 13)]
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    with pipeline() as p:
        out = p | beam.Create(list(reversed(records))) | TakeFirstPerSplit({"train": 3, "valid": 5})
        assert_that(out, equal_to(train[:3] + test))
