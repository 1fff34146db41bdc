"""ReadCorpus (:mod:`pipelines.beam.corpus`) with TestPipeline / assert_that / equal_to."""

import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline
from pipelines.beam.corpus import ReadCorpus
from pipelines.datasets import text_sources


def test_read_corpus_reads_in_workers_with_positions(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"one\r\ntwo\n")
    b.write_bytes(b"\xef\xbb\xbfthree\n\xff\n")
    sources = text_sources([str(a), str(b)])
    expected = [
        {"index": (0, 1), "split": None, "source": str(a), "line": 1, "item": 0, "raw": b"one"},
        {"index": (0, 2), "split": None, "source": str(a), "line": 2, "item": 1, "raw": b"two"},
        {"index": (1, 1), "split": None, "source": str(b), "line": 1, "item": 0, "raw": b"three"},
        {"index": (1, 2), "split": None, "source": str(b), "line": 2, "item": 1, "raw": b"\xff"},
    ]
    with pipeline() as p:
        assert_that(p | ReadCorpus(sources), equal_to(expected))


def test_read_corpus_fails_if_a_source_changed(tmp_path):
    a = tmp_path / "a.txt"
    a.write_bytes(b"one\n")
    with pytest.raises(Exception, match="changed while"):
        with pipeline() as p:
            _ = p | ReadCorpus(text_sources([str(a)]), {str(a): "0" * 64}, reshuffle=False)
