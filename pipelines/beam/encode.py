"""Tokenized records → schema features (ids), with the vocabularies / label sets as side inputs."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam.names import ACCEPTED, NAMESPACE, REJECTED
from pipelines.beam.rejects import UNKNOWN_LABEL, UNKNOWN_TAG, reject
from preprocessing.vocab import EOS_ID, UNK_ID


class EncodeForLMDoFn(beam.DoFn):
    """Tokens → ids followed by ``<eos>`` (Mikolov's PTB setup); side input: the
    :class:`~preprocessing.vocab.Vocabulary`."""

    def process(self, record, vocab):
        ids = vocab.encode(record["tokens"])
        unk = sum(1 for i in ids if i == UNK_ID)
        ids.append(EOS_ID)
        yield {"index": record["index"], "split": record["split"], "features": {"ids": ids}, "unk": unk, "labels": []}


class EncodeForLM(beam.PTransform):
    def __init__(self, vocab):
        """``vocab``: a PCollection holding one :class:`~preprocessing.vocab.Vocabulary` (from
        :class:`~pipelines.beam.vocabulary.BuildVocabulary`)."""
        super().__init__()
        self.vocab = vocab

    def expand(self, records):
        return records | "Encode" >> beam.ParDo(EncodeForLMDoFn(), beam.pvalue.AsSingleton(self.vocab))


class EncodeExamplesDoFn(beam.DoFn):
    """Tagging / classification records → schema features; a tag or label outside the training set
    is a ``rejected`` record (``unknown_tag`` / ``unknown_label``), never remapped.

    Side inputs: the token :class:`~preprocessing.vocab.Vocabulary`, the
    :class:`~preprocessing.vocab.LabelSet` and, for tagging with character features, the character
    :class:`~preprocessing.vocab.Vocabulary` (else ``None``).
    """

    def __init__(self, task: str):
        if task not in ("tagging", "classification", "seq2seq"):
            raise ValueError(f"EncodeExamples encodes tagging, classification or seq2seq records, not {task!r}")
        self.task = task

    def setup(self):
        self._unknown = Metrics.counter(NAMESPACE, f"rejected_{UNKNOWN_TAG if self.task == 'tagging' else UNKNOWN_LABEL}")

    def process(self, record, vocab, labels, chars=None):
        if self.task == "seq2seq":  # ``labels`` is the target vocabulary; unknown targets become <unk>
            ids = vocab.encode(record["tokens"])
            yield {"index": record["index"], "split": record["split"],
                   "features": {"source_ids": ids, "target_ids": labels.encode(record["target_tokens"])},
                   "unk": sum(1 for i in ids if i == UNK_ID), "labels": []}
            return
        names = record["tags"] if self.task == "tagging" else [record["label"]]
        unknown = labels.unknown(names) if labels is not None else names
        if unknown:
            self._unknown.inc()
            what = UNKNOWN_TAG if self.task == "tagging" else UNKNOWN_LABEL
            known = f"the training split's {len(labels)}" if labels is not None else "the training split, which is empty"
            detail = f"{what.split('_')[1]}(s) {unknown[:10]} not in {known}"
            yield reject(record, what, detail, " ".join(record["tokens"]))
            return
        ids = vocab.encode(record["tokens"])
        features = {"ids": ids}
        if self.task == "tagging":
            features["tags"] = labels.encode(record["tags"])
            if chars is not None:
                features["chars"] = [i for t in record["tokens"] for i in chars.encode(t)]
                features["char_lengths"] = [len(t) for t in record["tokens"]]
        else:
            features["label"] = labels.encode(names)[0]
        yield {"index": record["index"], "split": record["split"], "features": features,
               "unk": sum(1 for i in ids if i == UNK_ID), "labels": names}


class EncodeExamples(beam.PTransform):
    """Encodes tagging / classification records; returns outputs ``accepted`` (main) and ``rejected``.

    Args:
        task: ``"tagging"`` or ``"classification"``.
        vocab, labels: one-element PCollections (:mod:`pipelines.beam.vocabulary`: ``BuildVocabulary``,
            ``BuildLabelSet``).
        chars: optional one-element PCollection with the character
            :class:`~preprocessing.vocab.Vocabulary`.
    """

    def __init__(self, task: str, vocab, labels, chars=None):
        super().__init__()
        self.task, self.vocab, self.labels, self.chars = task, vocab, labels, chars

    def expand(self, records):
        side = [beam.pvalue.AsSingleton(self.vocab), beam.pvalue.AsSingleton(self.labels)]
        if self.chars is not None:
            side.append(beam.pvalue.AsSingleton(self.chars))
        return records | "Encode" >> beam.ParDo(EncodeExamplesDoFn(self.task), *side).with_outputs(
            REJECTED, main=ACCEPTED
        )
