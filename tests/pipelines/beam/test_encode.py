"""EncodeForLM (:mod:`pipelines.beam.encode`); EncodeExamples is tested in ``test_prepare_tasks.py``."""

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline, tok
from pipelines.beam.encode import EncodeForLM
from preprocessing.vocab import EOS_ID, UNK_ID, Vocabulary


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
                    {"index": (0, 1), "split": "train", "features": {"ids": [4, 5, EOS_ID]}, "unk": 0, "labels": []},
                    {"index": (0, 2), "split": "test", "features": {"ids": [UNK_ID, 4, EOS_ID]}, "unk": 1, "labels": []},
                ]
            ),
        )
