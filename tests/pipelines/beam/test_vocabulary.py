"""Counting tokens and building / writing vocabularies (:mod:`pipelines.beam.vocabulary`)."""

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline, tok
from pipelines.beam.names import VOCAB_FILE
from pipelines.beam.vocabulary import BuildVocabulary, CountTokens, WriteVocabulary
from preprocessing.vocab import Vocabulary


def test_count_tokens_counts_the_train_split_only():
    records = [tok(1, "train", ["a", "b", "a"]), tok(2, "test", ["a", "zebra"]), tok(3, "train", ["b"])]
    with pipeline() as p:
        assert_that(p | beam.Create(records) | CountTokens("train"), equal_to([("a", 2), ("b", 2)]))


def test_build_vocabulary_is_a_single_deterministic_vocabulary():
    counts = [("b", 2), ("a", 2), ("c", 1), ("<unk>", 9)]
    with pipeline() as p:
        vocab = p | beam.Create(counts) | BuildVocabulary(max_size=6, min_count=2)
        assert_that(vocab | beam.Map(lambda v: v.tokens), equal_to([Vocabulary.from_counts(counts, 6, 2).tokens]))
    assert Vocabulary.from_counts(counts, 6, 2).tokens[4:] == ["a", "b"]


def test_write_vocabulary(tmp_path):
    vocab = Vocabulary.from_counts({"x": 1})
    with pipeline() as p:
        info = p | "Vocab" >> beam.Create([vocab]) | WriteVocabulary(str(tmp_path))
        assert_that(info | beam.Map(lambda d: (d["path"], d["size"])), equal_to([(VOCAB_FILE, 5)]), label="vocab")
    assert Vocabulary.load(tmp_path / VOCAB_FILE) == vocab
