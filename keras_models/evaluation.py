"""Scoring a model on a whole split: stream perplexity (language models); loss, accuracy, span F1,
macro-F1, confusion matrix (taggers, classifiers); loss and error rates of decoded outputs (seq2seq).

Every example is scored (batches sorted by length, nothing dropped); padding never counts. Span-level
precision / recall / F1 for BIO / BIOES tags come from ``seqeval`` (strict mode for BIOES, CoNLL
``conlleval`` semantics for BIO), macro-F1 and the confusion matrix from scikit-learn. The compiled
batch function is kept between calls, so per-epoch validation does not recompile.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from keras_models.inputs import model_inputs
from preprocessing.input_fns import Examples, eval_batches


# ------------------------------------------------------------------------------ language models
class StreamEvaluator:
    """Loss, perplexity and bits per token over the *whole* stream of a BPTT layout, state carried throughout.

    Every window is scored, the last one possibly shorter, so the figure covers every target of the
    layout (``layout.num_targets``) and is comparable with published stream perplexities. The
    compiled window function is kept between calls (one per model), so per-epoch validation does not
    recompile.
    """

    def __init__(self, layout, jit_compile: bool = True):
        self.layout = layout
        self.jit_compile = jit_compile
        self._fns: dict[int, Callable] = {}

    def _fn(self, model):
        if id(model) not in self._fns:

            def window(ids, targets, state):
                logits, state = model.forward(ids, state, training=False)
                xent = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
                return tf.reduce_sum(tf.cast(xent, tf.float64)), state

            self._fns[id(model)] = tf.function(window, jit_compile=self.jit_compile, reduce_retracing=True)
        return self._fns[id(model)]

    def __call__(self, model) -> dict[str, float]:
        fn = self._fn(model)
        state = model.initial_state(self.layout.num_streams)
        total, count = 0.0, 0
        for ids, targets in self.layout.windows(drop_remainder=False):
            loss_sum, state = fn(tf.constant(ids), tf.constant(targets), state)
            total += float(loss_sum)
            count += targets.size
        loss = total / max(count, 1)
        return {
            "loss": loss,
            "perplexity": float(math.exp(min(loss, 700.0))),
            "bits_per_token": loss / math.log(2),
            "tokens": count,
        }


TAG_SCHEMES = ("plain", "bio", "bioes")  # data.tag_scheme: plain tags, or spans scored by span F1


# ------------------------------------------------------------------------ taggers, classifiers
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


def _check_unseen_names(known: list[str], unseen: list[str], what: str) -> None:
    clash = sorted(set(known) & set(unseen))
    if clash:
        raise ValueError(f"unseen {what} names {clash} are also known {what}s")


def _check_ids(ids: np.ndarray, known: int, unseen: int, what: str, where: str) -> None:
    """Every gold id is a known one (``< known``) or names an unseen one (``< known + unseen``)."""
    ids = np.asarray(ids)
    bad = ids[(ids < 0) | (ids >= known + unseen)]
    if bad.size:
        raise ValueError(
            f"{where}: gold {what} id {int(bad.flat[0])} is out of range: there are {known} known {what}s "
            f"(ids 0..{known - 1}) and {unseen} unseen {what} names (ids {known}..{known + unseen - 1})"
        )


class TaggingEvaluator(_BatchScorer):
    """Token loss and accuracy (and span P/R/F1 for BIO/BIOES tags) of a tagger over a split.

    Args:
        examples: the split (``preprocessing.input_fns.load_examples``).
        tag_names: tag strings in id order (``LabelSet.labels``): the ``N`` tags the model predicts.
        scheme: ``"plain"``, ``"bio"`` or ``"bioes"``.
        batch_size: examples per batch.
        max_chars: characters per token for the character encoder.
        jit_compile: compile the batch function with XLA.
        unseen_names: the names of gold tags unseen in training: gold id ``N + k`` is
            ``unseen_names[k]``. A gold id outside ``0 .. N + len(unseen_names) - 1`` is a
            ``ValueError``.

    ``__call__(model)`` returns ``{"loss", "accuracy", "tokens"}`` plus ``precision``, ``recall``,
    ``f1`` for span schemes; :meth:`predict` gives the gold and predicted tag strings per sentence.

    Unseen gold tags: the model can never predict them, so such a token is always wrong.
    ``accuracy`` is over every token (``tokens``, unseen ones included); ``loss`` averages only over
    the tokens the model's ``loss_sum`` scores (a token with an unseen tag is left out, and with a
    CRF every token of a sentence holding one). Span scores read the gold strings with the unseen
    names, so a gold span of an unseen type is a false negative (it appears in
    ``last_report["per_type"]`` with its support). With ``unseen_names`` (or unseen ids) the result
    also has ``unseen``, the number of tokens with an unseen gold tag, and ``last_report`` has
    ``"unseen": {name: tokens}``; without them, both are exactly as before.
    """

    def __init__(self, examples: Examples, tag_names: list[str], scheme: str = "plain", batch_size: int = 32,
                 max_chars: int | None = None, jit_compile: bool = False, unseen_names: list[str] | tuple = ()):
        super().__init__(jit_compile)
        self.examples = examples
        self.tag_names = list(tag_names)
        self.unseen_names = list(unseen_names)
        self.scheme = scheme
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.last_report: dict[str, Any] | None = None
        _check_unseen_names(self.tag_names, self.unseen_names, "tag")
        if examples.tags:
            flat = np.concatenate([np.zeros(0, np.int64), *examples.tags])
            limit = len(self.tag_names) + len(self.unseen_names)
            if flat.size and (flat.min() < 0 or flat.max() >= limit):
                for i, tags in enumerate(examples.tags):  # name the first sentence at fault
                    _check_ids(tags, len(self.tag_names), len(self.unseen_names), "tag", f"sentence {i}")

    def _make(self, model):
        def score(batch):
            inputs = model_inputs(batch)
            loss_sum, count = model.loss_sum(inputs, batch["tags"], training=False)
            return tf.cast(loss_sum, tf.float64), tf.cast(count, tf.float64), model.predict_tags(inputs)

        return score

    def _predict(self, model) -> tuple[list[list[str]], list[list[str]], float, float]:
        fn = self.fn(model)
        n = len(self.examples)
        gold: list[list[str] | None] = [None] * n
        pred: list[list[str] | None] = [None] * n
        total = scored = 0.0
        names = np.array(self.tag_names + self.unseen_names, dtype=object)
        for indices, batch in eval_batches(self.examples, self.batch_size, self.max_chars):
            loss_sum, count, tags = fn({k: tf.constant(v) for k, v in batch.items()})
            total += float(loss_sum)
            scored += float(count)
            tags = tags.numpy()
            for row, i in enumerate(indices):
                length = len(self.examples.ids[i])
                gold[i] = names[self.examples.tags[i]].tolist()
                pred[i] = names[tags[row, :length]].tolist()
        return gold, pred, total, scored  # type: ignore[return-value]

    def predict(self, model) -> tuple[list[list[str]], list[list[str]], float]:
        """Gold and predicted tag sequences (corpus order) and the summed loss.

        Gold tags unseen in training appear under their names (``unseen_names``); the summed loss
        leaves out what ``model.loss_sum`` leaves out (see the class docstring).
        """
        gold, pred, total, _ = self._predict(model)
        return gold, pred, total

    def __call__(self, model) -> dict[str, float]:
        gold, pred, total, scored = self._predict(model)
        known = len(self.tag_names)
        tokens = sum(len(g) for g in gold)
        unseen_ids = [t[t >= known] for t in self.examples.tags] if self.examples.tags else []
        unseen = int(sum(len(u) for u in unseen_ids))
        correct = sum(a == b and int(k) < known
                      for g, p, ids in zip(gold, pred, self.examples.tags) for a, b, k in zip(g, p, ids))
        # Without unseen tags every token is scored: the loss is over them all, as it always was.
        denominator = tokens if not unseen else scored
        out = {"loss": total / max(denominator, 1), "accuracy": correct / max(tokens, 1), "tokens": tokens}
        report: dict[str, Any] = {}
        if self.scheme != "plain":
            spans = span_scores(gold, pred, self.scheme)
            out.update(precision=spans["precision"], recall=spans["recall"], f1=spans["f1"])
            report["per_type"] = spans["per_type"]
        if self.unseen_names or unseen:
            out["unseen"] = unseen
            counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *unseen_ids]) - known,
                                 minlength=len(self.unseen_names))
            report["unseen"] = {name: int(c) for name, c in zip(self.unseen_names, counts)}
        self.last_report = report
        return out


class ClassificationEvaluator(_BatchScorer):
    """Loss, accuracy and macro-F1 of a classifier over a split; keeps the last confusion matrix.

    Args:
        examples: the split (``preprocessing.input_fns.load_examples``).
        label_names: class names in id order: the ``N`` classes the model predicts.
        batch_size: examples per batch.
        jit_compile: compile the batch function with XLA.
        unseen_names: the names of gold labels unseen in training: gold id ``N + k`` is
            ``unseen_names[k]``. A gold id outside ``0 .. N + len(unseen_names) - 1`` is a
            ``ValueError``.

    ``__call__(model)`` returns ``{"loss", "accuracy", "macro_f1", "examples"}``; ``last_report`` is
    scikit-learn's classification report and ``confusion`` the confusion matrix (rows: gold,
    columns: predicted), both over ``confusion_labels`` (``label_names + unseen_names``, in id order).

    Unseen gold labels: the model can never predict them, so such a document is always wrong.
    ``accuracy`` is over every document (``examples``, unseen ones included); ``loss`` averages only
    over the documents with a known gold label (the others have no score). ``macro_f1`` and the
    report cover the known and the unseen labels: an unseen label has its support, zero recall and
    zero F1 (it is never predicted), and lowers the macro average like any class the model misses.
    The confusion matrix has a row and a column for every known and unseen label; the columns of
    unseen labels are all zero. With ``unseen_names`` (or unseen ids) the result also has
    ``unseen``, the number of documents with an unseen gold label, and ``last_report`` has
    ``"unseen": {name: documents}``; without them, everything is exactly as before (square over the
    known labels).
    """

    def __init__(self, examples: Examples, label_names: list[str], batch_size: int = 32, jit_compile: bool = False,
                 unseen_names: list[str] | tuple = ()):
        super().__init__(jit_compile)
        self.examples = examples
        self.label_names = list(label_names)
        self.unseen_names = list(unseen_names)
        self.batch_size = batch_size
        self.confusion: np.ndarray | None = None
        self.last_report: dict[str, Any] | None = None
        _check_unseen_names(self.label_names, self.unseen_names, "label")
        if examples.labels is not None:
            _check_ids(examples.labels, len(self.label_names), len(self.unseen_names), "label", "the split")

    @property
    def confusion_labels(self) -> list[str]:
        """Names of the rows and columns of :attr:`confusion` (and of the report's classes)."""
        return self.label_names + self.unseen_names

    def _make(self, model):
        known = len(self.label_names)

        def score(batch):
            logits = model(batch["ids"], training=False)
            labels = batch["label"]
            scored = labels < known  # a label unseen in training has no score
            xent = keras.losses.sparse_categorical_crossentropy(tf.where(scored, labels, 0), logits, from_logits=True)
            xent = tf.cast(xent, tf.float64)
            return (tf.reduce_sum(tf.where(scored, xent, tf.zeros_like(xent))),
                    tf.reduce_sum(tf.cast(scored, tf.float64)),
                    tf.argmax(logits, axis=-1, output_type=tf.int32))

        return score

    def _predict(self, model) -> tuple[np.ndarray, float, float]:
        fn = self.fn(model)
        pred = np.zeros(len(self.examples), np.int32)
        total = scored = 0.0
        for indices, batch in eval_batches(self.examples, self.batch_size):
            loss_sum, count, p = fn({k: tf.constant(v) for k, v in batch.items()})
            total += float(loss_sum)
            scored += float(count)
            pred[np.asarray(indices)] = p.numpy()
        return pred, total, scored

    def predict(self, model) -> tuple[np.ndarray, float]:
        """Predicted label ids in corpus order and the summed loss (over the documents with a known
        gold label)."""
        pred, total, _ = self._predict(model)
        return pred, total

    def __call__(self, model) -> dict[str, float]:
        from sklearn.metrics import classification_report, confusion_matrix, f1_score

        pred, total, scored = self._predict(model)
        gold = self.examples.labels
        known = len(self.label_names)
        unseen_mask = gold >= known
        unseen = int(unseen_mask.sum())
        labels = list(range(len(self.confusion_labels)))
        self.confusion = confusion_matrix(gold, pred, labels=labels)
        self.last_report = classification_report(gold, pred, labels=labels, target_names=self.confusion_labels,
                                                 output_dict=True, zero_division=0)
        # Without unseen labels every document is scored: the loss is over them all, as it always was.
        n = max(len(gold) if not unseen else scored, 1)
        out = {
            "loss": total / n,
            "accuracy": float(np.mean((gold == pred) & ~unseen_mask)) if len(gold) else 0.0,
            "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
            "examples": len(gold),
        }
        if self.unseen_names or unseen:
            out["unseen"] = unseen
            counts = np.bincount(gold[unseen_mask] - known, minlength=len(self.unseen_names))
            self.last_report["unseen"] = {name: int(c) for name, c in zip(self.unseen_names, counts)}
        return out


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


def text_scores(hypotheses: list[list[str]], references: list[list[list[str]]], joiner: str = " ") -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu) for text-to-text outputs given as token lists.

    ``references[i]`` lists input ``i``'s references. BLEU counts n-grams of the target tokens (words,
    or characters for a character-level target); chrF reads the text the tokens make (joined with
    ``joiner``: ``""`` for characters).
    """
    import sacrebleu

    width = max(len(r) for r in references)

    def streams(join):
        return [[join.join(refs[k] if k < len(refs) else refs[0]) for refs in references] for k in range(width)]

    bleu = sacrebleu.corpus_bleu([" ".join(h) for h in hypotheses], streams(" "), tokenize="none")
    chrf = sacrebleu.corpus_chrf([joiner.join(h) for h in hypotheses], streams(joiner))
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


class Seq2SeqEvaluator(_BatchScorer):
    """Teacher-forced loss / perplexity and decoded-output error rates of an encoder-decoder over a split.

    Every source is decoded once (greedy, or beam search with ``beam_size > 1``), however many
    references it has: the examples are grouped by source (their ids) and an output is correct if
    it equals any of the source's references (CMUdict's alternate pronunciations).

    Args:
        examples: the split (``preprocessing.input_fns.load_examples``; task ``seq2seq``).
        target_vocab: target tokens in id order.
        batch_size: sources per batch.
        beam_size: 1 = greedy search.
        max_length: the longest output, in tokens (``<eos>`` included).
        length_penalty: beam search's length normalization exponent.
        text_metrics: also compute BLEU and chrF (sacrebleu) over the detokenized outputs.
        target_level: ``"word"`` or ``"char"`` (how outputs are joined into text for BLEU / chrF).
        jit_compile: compile the loss function with XLA.

    ``__call__(model)`` returns ``{"loss", "perplexity", "wer", "per", "sources"}`` (+ ``bleu``,
    ``chrf``); :meth:`decode` the outputs per source.
    """

    def __init__(self, examples: Examples, target_vocab: list[str], batch_size: int = 64, beam_size: int = 1,
                 max_length: int = 50, length_penalty: float = 1.0, text_metrics: bool = False,
                 target_level: str = "word", jit_compile: bool = False):
        super().__init__(jit_compile)
        self.examples = examples
        self.target_vocab = list(target_vocab)
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.max_length = max_length
        self.length_penalty = length_penalty
        self.text_metrics = text_metrics
        self.target_level = target_level
        groups: dict[tuple, list[int]] = {}
        for i, ids in enumerate(examples.ids):
            groups.setdefault(tuple(int(x) for x in ids), []).append(i)
        self.sources = list(groups)  # distinct sources, in order of first appearance
        self.references = [[self._tokens(examples.targets[i]) for i in members] for members in groups.values()]
        self._search = None

    def _tokens(self, ids) -> list[str]:
        from preprocessing.vocab import EOS_ID

        out = []
        for i in ids:
            if int(i) in (0, EOS_ID):
                break
            out.append(self.target_vocab[int(i)])
        return out

    def _make(self, model):
        def score(batch):
            loss_sum, count = model.loss_sum(model_inputs(batch), batch["target_out"], training=False)
            return tf.cast(loss_sum, tf.float64), tf.cast(count, tf.float64)

        return score

    def _search_fn(self, model):
        from keras_models.decoding import beam_search, greedy_search
        from preprocessing.vocab import BOS_ID, EOS_ID

        def search(source_ids):
            state = model.search_state(model.encode(source_ids, training=False))
            if self.beam_size <= 1:
                tokens, _ = greedy_search(model.step_fn(), state, bos_id=BOS_ID, eos_id=EOS_ID,
                                          max_length=self.max_length)
                return tokens
            tokens, _, _ = beam_search(model.step_fn(), state, beam_size=self.beam_size, bos_id=BOS_ID,
                                       eos_id=EOS_ID, max_length=self.max_length,
                                       length_penalty=self.length_penalty)
            return tokens[:, 0]

        return tf.function(search, reduce_retracing=True)

    def decode(self, model, sources: list[tuple] | None = None) -> list[list[str]]:
        """The output tokens for each source (default: every distinct source of the split)."""
        from preprocessing.input_fns import bucket_length

        if self._search is None or self._search[0] is not model:
            self._search = (model, self._search_fn(model))
        search = self._search[1]
        sources = self.sources if sources is None else sources
        order = np.argsort([len(s) for s in sources], kind="stable")
        outputs: list[list[str] | None] = [None] * len(sources)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = bucket_length(max(len(sources[i]) for i in rows))
            batch = np.zeros((len(rows), width), np.int32)
            for k, i in enumerate(rows):
                batch[k, : len(sources[i])] = sources[i]
            tokens = search(tf.constant(batch)).numpy()
            for k, i in enumerate(rows):
                outputs[i] = self._tokens(tokens[k])
        return outputs  # type: ignore[return-value]

    def __call__(self, model) -> dict[str, float]:
        fn = self.fn(model)
        total = count = 0.0
        for _, batch in eval_batches(self.examples, self.batch_size):
            loss_sum, n = fn({k: tf.constant(v) for k, v in batch.items()})
            total += float(loss_sum)
            count += float(n)
        loss = total / max(count, 1.0)
        hypotheses = self.decode(model)
        out = {"loss": loss, "perplexity": float(math.exp(min(loss, 700.0))),
               **sequence_error_rates(hypotheses, self.references), "sources": len(self.sources)}
        if self.text_metrics:
            out.update(text_scores(hypotheses, self.references, "" if self.target_level == "char" else " "))
        return out
