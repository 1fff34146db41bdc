"""Vocabularies and label sets from the training split: counting tokens, labels and characters,
building a :class:`~preprocessing.vocab.Vocabulary` / :class:`~preprocessing.vocab.LabelSet` (one
element, for ``AsSingleton``) and writing it."""

from __future__ import annotations

import hashlib
import logging
import os

import apache_beam as beam

from pipelines.beam.files import write_bytes_atomic
from pipelines.beam.names import VOCAB_FILE
from preprocessing.vocab import LabelSet, Vocabulary

log = logging.getLogger(__name__)


class _CountValues(beam.PTransform):
    """``(value, count)`` over the values ``self.values(record)`` of one split's records (``None``: all)."""

    def __init__(self, split: str | None = "train"):
        super().__init__()
        self.split = split

    def values(self, record):
        raise NotImplementedError

    def expand(self, records):
        if self.split is not None:
            records = records | f"Only[{self.split}]" >> beam.Filter(lambda r, s: r["split"] == s, self.split)
        return (
            records
            | "Values" >> beam.FlatMap(self.values)
            | "Count" >> beam.combiners.Count.PerElement()
        )


class CountTokens(_CountValues):
    """``(token, count)`` over the tokenized records of one split (default: train only); ``field``
    names the token list (``target_tokens`` for the target side of pairs)."""

    def __init__(self, split: str | None = "train", field: str = "tokens"):
        super().__init__(split)
        self.field = field

    def values(self, record):
        return record[self.field]


def _build_vocabulary(pairs, max_size, min_count):
    vocab = Vocabulary.from_counts(pairs, max_size=max_size, min_count=min_count)
    log.info("vocabulary: %d tokens (%d distinct in the counted split)", len(vocab), len(pairs))
    return vocab


class BuildVocabulary(beam.PTransform):
    """``(token, count)`` pairs → a one-element PCollection holding a :class:`Vocabulary` (use ``AsSingleton``)."""

    def __init__(self, max_size: int | None = None, min_count: int = 1):
        super().__init__()
        self.max_size = max_size
        self.min_count = min_count

    def expand(self, counts):
        return (
            counts
            | "DropRare" >> beam.Filter(lambda kv, m: kv[1] >= m, self.min_count)
            | "Gather" >> beam.combiners.ToList()
            | "FromCounts" >> beam.Map(_build_vocabulary, self.max_size, self.min_count)
        )


class CountLabels(_CountValues):
    """``(label, count)`` over one split's records: every tag of a tagging record, or the ``label``."""

    def values(self, record):
        return record["tags"] if "tags" in record else [record["label"]]


def _build_label_set(pairs, what):
    """A :class:`LabelSet`, or ``None`` when the training split has no examples (every record is then
    rejected by :class:`~pipelines.beam.encode.EncodeExamples`, and the prepare job reports the empty
    corpus with its sources and rejection reasons)."""
    if not pairs:
        log.warning("the training split has no %s: every record will be rejected", what)
        return None
    labels = LabelSet.from_labels(label for label, _ in pairs)
    log.info("%s: %d (%s)", what, len(labels), ", ".join(labels.labels[:20]))
    return labels


class BuildLabelSet(beam.PTransform):
    """``(label, count)`` pairs → a one-element PCollection holding a :class:`LabelSet` (use ``AsSingleton``)."""

    def __init__(self, what: str = "labels"):
        super().__init__()
        self.what = what

    def expand(self, counts):
        return counts | "Gather" >> beam.combiners.ToList() | "FromLabels" >> beam.Map(_build_label_set, self.what)


class CountCharacters(_CountValues):
    """``(character, count)`` over the tokens of one split (for a character vocabulary)."""

    def values(self, record):
        return [c for t in record["tokens"] for c in t]


def _write_vocabulary(vocab, output_dir, path):
    data = vocab.to_bytes() if vocab is not None else b""  # None: no training examples (an error later)
    write_bytes_atomic(os.path.join(output_dir, path), data)
    return {"path": path, "size": len(vocab) if vocab is not None else 0, "sha256": hashlib.sha256(data).hexdigest()}


class WriteVocabulary(beam.PTransform):
    """A one-element :class:`Vocabulary` / :class:`LabelSet` PCollection → ``<output_dir>/<path>``
    (default ``vocab/tokens.txt``); yields ``{"path", "size", "sha256"}``."""

    def __init__(self, output_dir: str, path: str = VOCAB_FILE):
        super().__init__()
        self.output_dir = output_dir
        self.path = path

    def expand(self, vocab):
        return vocab | "Write" >> beam.Map(_write_vocabulary, self.output_dir, self.path)
