"""EncodeForLM, EncodePairs and UnseenLabels (:mod:`pipelines.beam.encode`); EncodeLabelled (tagging,
classification) is tested in ``test_prepare_tasks.py``."""

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline, tok
from pipelines.beam.encode import EncodeForLM, EncodePairs, UnseenLabels
from preprocessing.vocab import EOS_ID, UNK_ID, LabelSet, Vocabulary


def test_encode_for_lm_appends_eos_and_counts_unknowns():
    vocab = Vocabulary.from_counts({"a": 2, "b": 1})
    records = [tok(1, "train", ["a", "b"]), tok(2, "test", ["zebra", "a"])]
    with pipeline() as p:
        v = p | "Vocab" >> beam.Create([vocab])
        out = p | "Records" >> beam.Create(records) | EncodeForLM(v)
        assert_that(
            out,
            equal_to(
                [
                    # an LM record has no labels, so never an unseen one
                    {"index": (0, 1), "split": "train", "features": {"ids": [4, 5, EOS_ID]}, "unk": 0, "labels": [],
                     "unseen": []},
                    {"index": (0, 2), "split": "test", "features": {"ids": [UNK_ID, 4, EOS_ID]}, "unk": 1,
                     "labels": [], "unseen": []},
                ]
            ),
        )


def test_encode_pairs_encodes_both_sides_and_counts_source_unknowns():
    vocab = Vocabulary.from_counts({"a": 2, "b": 1})  # a=4 b=5
    target_vocab = Vocabulary.from_counts({"X": 2, "Y": 1})  # X=4 Y=5
    records = [dict(tok(1, "train", ["a", "b"]), target_tokens=["X", "Y", "X"]),
               dict(tok(2, "test", ["zebra", "a"]), target_tokens=["Z"])]
    with pipeline() as p:
        v = p | "Vocab" >> beam.Create([vocab])
        t = p | "TargetVocab" >> beam.Create([target_vocab])
        out = p | "Records" >> beam.Create(records) | EncodePairs(v, t)
        assert_that(
            out,
            equal_to(
                [
                    # no <eos> on either side (the input functions add <bos>/<eos> to the target)
                    {"index": (0, 1), "split": "train", "features": {"source_ids": [4, 5], "target_ids": [4, 5, 4]},
                     "unk": 0, "labels": [], "unseen": []},
                    # unk counts the source side only; an unknown target token is <unk> too
                    {"index": (0, 2), "split": "test", "features": {"source_ids": [UNK_ID, 4], "target_ids": [UNK_ID]},
                     "unk": 1, "labels": [], "unseen": []},
                ]
            ),
        )


def test_unseen_labels_transform_gathers_every_split_against_the_training_set():
    known = LabelSet.from_labels(["DET", "NOUN"])
    with pipeline() as p:
        labels = p | "Known" >> beam.Create([known])
        counts = p | "Counts" >> beam.Create([("NOUN", 3), ("INTJ", 1), ("ADJ", 2), ("DET", 1)])
        unseen = counts | UnseenLabels(labels)
        assert_that(unseen | beam.Map(lambda s: s.labels), equal_to([["ADJ", "INTJ"]]))
    with pipeline() as p:
        labels = p | "Known" >> beam.Create([known])
        counts = p | "Counts" >> beam.Create([("NOUN", 3), ("DET", 1)])
        assert_that(counts | UnseenLabels(labels), equal_to([None]))  # every label was seen: no side input
