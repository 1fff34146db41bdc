"""Scoring taggers and classifiers on a whole split: loss, accuracy, span F1, macro-F1, confusion matrix.

Every example is scored (batches sorted by length, nothing dropped); padding never counts. Span-level
precision / recall / F1 for BIO / BIOES tags come from ``seqeval`` (strict mode for BIOES, CoNLL
``conlleval`` semantics for BIO), macro-F1 and the confusion matrix from scikit-learn. The compiled
batch function is kept between calls, so per-epoch validation does not recompile.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from keras_models.training import model_inputs
from preprocessing.input_fns import Examples, eval_batches


def span_scores(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict[str, Any]:
    """Span precision / recall / F1 (micro) and per type, with seqeval.

    ``scheme``: ``"bio"`` (IOB2, as conlleval scores it) or ``"bioes"`` (strict IOBES: a malformed
    span does not count).
    """
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    if scheme == "bioes":
        from seqeval.scheme import IOBES

        kwargs = {"mode": "strict", "scheme": IOBES}
    else:
        kwargs = {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    per_type = {k: {m: float(v) for m, v in d.items()} for k, d in report.items() if not k.endswith(" avg")}
    return {
        "precision": float(precision_score(gold, pred, zero_division=0, **kwargs)),
        "recall": float(recall_score(gold, pred, zero_division=0, **kwargs)),
        "f1": float(f1_score(gold, pred, zero_division=0, **kwargs)),
        "per_type": per_type,
    }


class _BatchScorer:
    """One compiled function per model: batch → (summed loss, predictions)."""

    def __init__(self, jit_compile: bool):
        self.jit_compile = jit_compile
        self._fns: dict[int, Callable] = {}

    def _make(self, model) -> Callable:
        raise NotImplementedError

    def fn(self, model) -> Callable:
        if id(model) not in self._fns:
            self._fns[id(model)] = tf.function(self._make(model), jit_compile=self.jit_compile, reduce_retracing=True)
        return self._fns[id(model)]


class TaggingEvaluator(_BatchScorer):
    """Token loss and accuracy (and span P/R/F1 for BIO/BIOES tags) of a tagger over a split.

    Args:
        examples: the split (``preprocessing.input_fns.load_examples``).
        tag_names: tag strings in id order (``LabelSet.labels``).
        scheme: ``"plain"``, ``"bio"`` or ``"bioes"``.
        batch_size: examples per batch.
        max_chars: characters per token for the character encoder.
        jit_compile: compile the batch function with XLA.

    ``__call__(model)`` returns ``{"loss", "accuracy", "tokens"}`` plus ``precision``, ``recall``,
    ``f1`` for span schemes; :meth:`predict` gives the gold and predicted tag strings per sentence.
    """

    def __init__(self, examples: Examples, tag_names: list[str], scheme: str = "plain", batch_size: int = 32,
                 max_chars: int | None = None, jit_compile: bool = False):
        super().__init__(jit_compile)
        self.examples = examples
        self.tag_names = list(tag_names)
        self.scheme = scheme
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.last_report: dict[str, Any] | None = None

    def _make(self, model):
        def score(batch):
            inputs = model_inputs(batch)
            loss_sum, _ = model.loss_sum(inputs, batch["tags"], training=False)
            return tf.cast(loss_sum, tf.float64), model.predict_tags(inputs)

        return score

    def predict(self, model) -> tuple[list[list[str]], list[list[str]], float]:
        """Gold and predicted tag sequences (corpus order) and the summed loss."""
        fn = self.fn(model)
        n = len(self.examples)
        gold: list[list[str] | None] = [None] * n
        pred: list[list[str] | None] = [None] * n
        total = 0.0
        names = np.array(self.tag_names, dtype=object)
        for indices, batch in eval_batches(self.examples, self.batch_size, self.max_chars):
            loss_sum, tags = fn({k: tf.constant(v) for k, v in batch.items()})
            total += float(loss_sum)
            tags = tags.numpy()
            for row, i in enumerate(indices):
                length = len(self.examples.ids[i])
                gold[i] = names[self.examples.tags[i]].tolist()
                pred[i] = names[tags[row, :length]].tolist()
        return gold, pred, total  # type: ignore[return-value]

    def __call__(self, model) -> dict[str, float]:
        gold, pred, total = self.predict(model)
        tokens = sum(len(g) for g in gold)
        correct = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
        out = {"loss": total / max(tokens, 1), "accuracy": correct / max(tokens, 1), "tokens": tokens}
        report: dict[str, Any] = {}
        if self.scheme != "plain":
            spans = span_scores(gold, pred, self.scheme)
            out.update(precision=spans["precision"], recall=spans["recall"], f1=spans["f1"])
            report["per_type"] = spans["per_type"]
        self.last_report = report
        return out


class ClassificationEvaluator(_BatchScorer):
    """Loss, accuracy and macro-F1 of a classifier over a split; keeps the last confusion matrix.

    Args:
        examples: the split (``preprocessing.input_fns.load_examples``).
        label_names: class names in id order.
        batch_size: examples per batch.
        jit_compile: compile the batch function with XLA.
    """

    def __init__(self, examples: Examples, label_names: list[str], batch_size: int = 32, jit_compile: bool = False):
        super().__init__(jit_compile)
        self.examples = examples
        self.label_names = list(label_names)
        self.batch_size = batch_size
        self.confusion: np.ndarray | None = None
        self.last_report: dict[str, Any] | None = None

    def _make(self, model):
        def score(batch):
            logits = model(batch["ids"], training=False)
            xent = keras.losses.sparse_categorical_crossentropy(batch["label"], logits, from_logits=True)
            return tf.reduce_sum(tf.cast(xent, tf.float64)), tf.argmax(logits, axis=-1, output_type=tf.int32)

        return score

    def predict(self, model) -> tuple[np.ndarray, float]:
        """Predicted label ids in corpus order and the summed loss."""
        fn = self.fn(model)
        pred = np.zeros(len(self.examples), np.int32)
        total = 0.0
        for indices, batch in eval_batches(self.examples, self.batch_size):
            loss_sum, p = fn({k: tf.constant(v) for k, v in batch.items()})
            total += float(loss_sum)
            pred[np.asarray(indices)] = p.numpy()
        return pred, total

    def __call__(self, model) -> dict[str, float]:
        from sklearn.metrics import classification_report, confusion_matrix, f1_score

        pred, total = self.predict(model)
        gold = self.examples.labels
        labels = list(range(len(self.label_names)))
        self.confusion = confusion_matrix(gold, pred, labels=labels)
        self.last_report = classification_report(gold, pred, labels=labels, target_names=self.label_names,
                                                 output_dict=True, zero_division=0)
        n = max(len(gold), 1)
        return {
            "loss": total / n,
            "accuracy": float(np.mean(gold == pred)) if len(gold) else 0.0,
            "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
            "examples": len(gold),
        }


# ------------------------------------------------------------------------------------ seq2seq
def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Token-level Levenshtein distance (substitutions + deletions + insertions), via jiwer."""
    import jiwer

    if not reference:
        return len(hypothesis)
    if not hypothesis:
        return len(reference)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return out.substitutions + out.deletions + out.insertions


def sequence_error_rates(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    """Word error rate and token (phoneme) error rate of outputs with one or more references each.

    ``wer``: the fraction of inputs whose output matches none of its references exactly (G2P's word
    error rate). ``per``: edit distance to the closest reference, summed, over the summed length of
    those references (phoneme error rate; character/word error rate for other targets).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference sets")
    wrong = errors = length = 0
    for hyp, refs in zip(hypotheses, references):
        if not refs:
            raise ValueError("every input needs at least one reference")
        if hyp not in refs:
            wrong += 1
        best = min(refs, key=lambda r: (edit_distance(r, hyp), len(r)))
        errors += 0 if hyp in refs else edit_distance(best, hyp)
        length += len(best)
    n = max(len(hypotheses), 1)
    return {"wer": wrong / n, "per": errors / max(length, 1)}


def text_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu) for text-to-text outputs; ``references[i]`` lists input i's references."""
    import sacrebleu

    width = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(width)]
    return {"bleu": float(sacrebleu.corpus_bleu(hypotheses, streams).score),
            "chrf": float(sacrebleu.corpus_chrf(hypotheses, streams).score)}
