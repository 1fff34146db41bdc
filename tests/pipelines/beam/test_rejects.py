"""WriteRejected (:mod:`pipelines.beam.rejects`): one JSONL file in corpus order, written even when empty."""

import json

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline
from pipelines.beam.names import REJECTED_FILE
from pipelines.beam.rejects import SplitRejected, WriteRejected, is_rejected, reject


def test_write_rejected_in_corpus_order(tmp_path):
    rejected = [
        {"index": (1, 2), "split": "train", "source": "b", "line": 2, "reason": "empty", "detail": "d", "text": ""},
        {"index": (0, 5), "split": "test", "source": "a", "line": 5, "reason": "too_long", "detail": "d", "text": "é"},
    ]
    with pipeline() as p:
        summary = p | "Rejected" >> beam.Create(rejected) | WriteRejected(str(tmp_path))
        assert_that(
            summary,
            equal_to([{"count": 2, "by_reason": {"empty": 1, "too_long": 1}, "path": REJECTED_FILE}]),
            label="summary",
        )
    lines = (tmp_path / REJECTED_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0]) == {"source": "a", "line": 5, "split": "test", "reason": "too_long", "detail": "d",
                                    "text": "é"}


def test_write_rejected_writes_an_empty_file_when_nothing_is_rejected(tmp_path):
    with pipeline() as p:
        summary = p | beam.Create([]) | WriteRejected(str(tmp_path))
        assert_that(summary, equal_to([{"count": 0, "by_reason": {}, "path": REJECTED_FILE}]))
    assert (tmp_path / REJECTED_FILE).read_bytes() == b""


def test_reject_is_a_plain_record_with_a_reason_and_split_rejected_sets_it_apart():
    record = {"index": (0, 4), "split": "train", "source": "s", "line": 4, "raw": b"x", "item": 3}
    rejected = reject(record, "empty", "no token", "x" * 2100)
    assert type(rejected) is dict and is_rejected(rejected) and not is_rejected(record)
    assert rejected == {"index": (0, 4), "split": "train", "source": "s", "line": 4, "reason": "empty",
                        "detail": "no token", "text": "x" * 2000 + "... [100 more characters]"}
    with pipeline() as p:
        out = p | beam.Create([record, rejected]) | SplitRejected()
        accepted, rejected_pc = out  # a Split unpacks as (accepted, rejected)
        assert accepted is out.accepted and rejected_pc is out.rejected
        assert_that(out.accepted, equal_to([record]), label="accepted")
        assert_that(out.rejected, equal_to([rejected]), label="rejected")
