"""Helpers for the tests of :mod:`pipelines.beam` (importable from the test modules beside it, whose folder
pytest puts on ``sys.path``): an in-process ``TestPipeline`` and small corpus / tokenized records."""

from apache_beam.testing import test_pipeline

from pipelines.beam.runners import local_runner


def pipeline():
    # FnApiRunner in-process: DirectRunner would first try to download the Prism runner.
    return test_pipeline.TestPipeline(runner=local_runner())


def rec(index, split, raw, source="s.txt"):
    """A corpus record of ``raw`` text bytes."""
    return {"index": (0, index), "split": split, "source": source, "line": index, "raw": raw}


def tok(index, split, tokens):
    """A tokenized (or pre-tokenized) record."""
    return {"index": (0, index), "split": split, "source": "s.txt", "line": index, "tokens": tokens}
