"""Tokenized records → schema features (ids), with the vocabularies / label sets as side inputs.

Three shapes of record, each a transform that a task's ``encode`` step uses
(:mod:`pipelines.tasks`): a token stream (:class:`EncodeForLM`), tokens with labels — one per
token or one per record — (:class:`EncodeLabelled`), and source/target pairs (:class:`EncodePairs`).

Labels unseen in training: the label set is the training split's. A valid/test record whose gold
label (or one of its tags) the training split lacks is *kept*: the unseen label gets the id
``len(labels) + k``, ``k`` its index in the sorted list of all unseen labels (written to
``vocab/unseen_<what>.txt``), an id no model trained on ``labels`` can predict, so evaluation
counts it as wrong instead of silently leaving the item out. Every encoded record carries
``unseen`` (the unseen names it holds), which the split summary counts.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.beam.names import NAMESPACE
from preprocessing.vocab import EOS_ID, UNK_ID, LabelSet

log = logging.getLogger(__name__)


def _encoded(record, features: dict, ids: list[int], labels: list[str], unseen: list[str] = ()) -> dict:
    return {"index": record["index"], "split": record["split"], "features": features,
            "unk": sum(1 for i in ids if i == UNK_ID), "labels": list(labels), "unseen": list(unseen)}


class EncodeForLMDoFn(beam.DoFn):
    """Tokens → ids followed by ``<eos>`` (Mikolov's PTB setup); side input: the
    :class:`~preprocessing.vocab.Vocabulary`."""

    def process(self, record, vocab):
        ids = vocab.encode(record["tokens"])
        unk = sum(1 for i in ids if i == UNK_ID)
        ids.append(EOS_ID)
        yield {"index": record["index"], "split": record["split"], "features": {"ids": ids}, "unk": unk,
               "labels": [], "unseen": []}


class EncodeForLM(beam.PTransform):
    def __init__(self, vocab):
        """``vocab``: a PCollection holding one :class:`~preprocessing.vocab.Vocabulary` (from
        :class:`~pipelines.beam.vocabulary.BuildVocabulary`)."""
        super().__init__()
        self.vocab = vocab

    def expand(self, records):
        return records | "Encode" >> beam.ParDo(EncodeForLMDoFn(), beam.pvalue.AsSingleton(self.vocab))


def unseen_labels(counts: list, known: LabelSet | None) -> LabelSet | None:
    """The labels counted in any split that ``known`` (the training split's) lacks, sorted; None if none."""
    names = sorted({name for name, _ in counts if known is None or name not in known})
    if names and known is not None:  # no training labels: every record is rejected (the empty-corpus error)
        log.warning("%d label(s) of the valid/test splits never occur in training (kept, scored as wrong): %s",
                    len(names), ", ".join(names[:20]))
    return LabelSet(names) if names else None


class UnseenLabels(beam.PTransform):
    """``(label, count)`` pairs of every split + the training :class:`LabelSet` → a one-element
    PCollection holding the unseen labels' :class:`LabelSet` (or ``None``)."""

    def __init__(self, known):
        super().__init__()
        self.known = known

    def expand(self, counts):
        return (counts | "Gather" >> beam.combiners.ToList()
                | "NotInTraining" >> beam.Map(unseen_labels, beam.pvalue.AsSingleton(self.known)))


class EncodeLabelledDoFn(beam.DoFn):
    """Records with labels → ``{"ids", field: label ids}`` (+ ``chars``, ``char_lengths``).

    ``field`` is the record key of the labels; ``per_token``: one label per token (a list, e.g. tags)
    or one per record (a string). Side inputs: the token :class:`~preprocessing.vocab.Vocabulary`,
    the training :class:`LabelSet` (``None`` when the training split is empty: nothing can be
    encoded, every record is rejected as ``unknown_<what>`` and the job reports the empty corpus),
    the unseen labels' :class:`LabelSet` (or ``None``) and, optionally, the character vocabulary.
    """

    def __init__(self, field: str, per_token: bool, reason: str):
        self.field, self.per_token, self.reason = field, per_token, reason

    def setup(self):
        self._unknown = Metrics.counter(NAMESPACE, f"rejected_{self.reason}")
        self._unseen = Metrics.counter(NAMESPACE, "unseen_label_records")

    def process(self, record, vocab, labels, unseen, chars=None):
        from pipelines.beam.rejects import reject

        names = list(record[self.field]) if self.per_token else [record[self.field]]
        if labels is None:
            self._unknown.inc()
            yield reject(record, self.reason, f"{self.field} {names[:10]} not in the training split, which is empty",
                         " ".join(record["tokens"]))
            return
        unknown = labels.unknown(names)
        if unknown and (record["split"] == "train" or unseen is None or unseen.unknown(unknown)):
            raise ValueError(f"{record.get('source')} line {record.get('line')}: {self.field} {unknown} are neither "
                             "in the training label set nor among the unseen labels (a bug in the prepare job)")
        ids = vocab.encode(record["tokens"])
        base = len(labels)
        label_ids = [labels.encode([n])[0] if n in labels else base + unseen.encode([n])[0] for n in names]
        features = {"ids": ids, self.field: label_ids if self.per_token else label_ids[0]}
        if chars is not None:
            features["chars"] = [i for t in record["tokens"] for i in chars.encode(t)]
            features["char_lengths"] = [len(t) for t in record["tokens"]]
        if unknown:
            self._unseen.inc()
        yield _encoded(record, features, ids, names, [n for n in names if n not in labels])


class EncodeLabelled(beam.PTransform):
    """Encodes labelled records; returns a :class:`~pipelines.beam.rejects.Split` ``(accepted, rejected)``.

    Args:
        field, per_token, reason: see :class:`EncodeLabelledDoFn`.
        vocab, labels, unseen: one-element PCollections (``BuildVocabulary``, ``BuildLabelSet``,
            :class:`UnseenLabels`).
        chars: optional one-element PCollection with the character vocabulary.
    """

    def __init__(self, field: str, per_token: bool, reason: str, vocab, labels, unseen, chars=None):
        super().__init__()
        self.field, self.per_token, self.reason = field, per_token, reason
        self.vocab, self.labels, self.unseen, self.chars = vocab, labels, unseen, chars

    def expand(self, records):
        from pipelines.beam.rejects import SplitRejected

        side = [beam.pvalue.AsSingleton(x) for x in (self.vocab, self.labels, self.unseen)]
        if self.chars is not None:
            side.append(beam.pvalue.AsSingleton(self.chars))
        return (records
                | "Encode" >> beam.ParDo(EncodeLabelledDoFn(self.field, self.per_token, self.reason), *side)
                | "SetAside" >> SplitRejected())


class EncodePairsDoFn(beam.DoFn):
    """Source/target pairs → ``{"source_ids", "target_ids"}``; a target token outside the target
    vocabulary becomes ``<unk>`` (side inputs: the source and target vocabularies)."""

    def process(self, record, vocab, target_vocab):
        ids = vocab.encode(record["tokens"])
        yield _encoded(record, {"source_ids": ids, "target_ids": target_vocab.encode(record["target_tokens"])}, ids, [])


class EncodePairs(beam.PTransform):
    def __init__(self, vocab, target_vocab):
        super().__init__()
        self.vocab, self.target_vocab = vocab, target_vocab

    def expand(self, records):
        return records | "Encode" >> beam.ParDo(EncodePairsDoFn(), beam.pvalue.AsSingleton(self.vocab),
                                                beam.pvalue.AsSingleton(self.target_vocab))
