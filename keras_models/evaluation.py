"""Scoring a model on a whole split: stream perplexity (language models); loss, accuracy, span F1,
macro-F1, confusion matrix (taggers, classifiers); loss and error rates of decoded outputs (seq2seq).

Every example is scored (batches sorted by length, nothing dropped); padding never counts. The
evaluators of example records read one batch protocol (:func:`score_batches`): a split in memory
(``preprocessing.input_fns.Examples``) or streamed from its shards
(``preprocessing.streams.ExampleStream``), and keep sufficient statistics per batch — sums of
losses and counts, confusion matrices, span counts per type, edit distances, sacrebleu's n-gram
statistics — never every item, so a split of any size is scored in the memory of a window of
batches, with the figures of scoring it all at once. Span-level precision / recall / F1 for BIO /
BIOES tags come from ``seqeval``'s span extraction (strict mode for BIOES, CoNLL ``conlleval``
semantics for BIO), error rates and BLEU / chrF from :mod:`keras_models.metrics`, macro-F1 and the
classification report from scikit-learn. The compiled batch function is kept between calls, so
per-epoch validation does not recompile.

Every evaluator also has ``score_items(model, vocabulary)``: the same figures from the same single
pass, plus the split's per-item sufficient statistics (:class:`~keras_models.item_stats.ItemStats`:
a content key and a few numbers per sentence, document or source, whose sums give exactly the
figures), for paired comparisons of two models (:mod:`keras_models.bootstrap`). The items' numbers
are the only thing it keeps beyond what ``__call__`` keeps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_models.inputs import model_inputs
from keras_models.item_stats import ItemStats, item_key
from keras_models.metrics import (  # the evaluators' metrics, importable from here as before
    TextStatistics,
    edit_distance,
    error_counts,
    sentence_span_counts,
    sequence_error_rates,
    span_counts,
    span_report,
    span_scores,
    text_scores,
)
from preprocessing.input_fns import Examples, eval_batches
from preprocessing.vocab import EOS_ID

__all__ = [
    "ClassificationEvaluator", "ItemStats", "Seq2SeqEvaluator", "StreamEvaluator", "TAG_SCHEMES", "TaggingEvaluator",
    "TextStatistics", "edit_distance", "error_counts", "score_batches", "sequence_error_rates", "span_counts",
    "span_report", "span_scores", "text_scores",
]


def _vocabulary_array(vocabulary) -> np.ndarray:
    vocab = np.asarray(list(vocabulary), dtype=object)
    if vocab.ndim != 1 or not vocab.size:
        raise ValueError("score_items needs the vocabulary: the token strings in id order")
    return vocab


def _tokens(vocab: np.ndarray, ids, where: str) -> list[str]:
    """The token strings of ``ids`` (an id outside the vocabulary is an error naming ``where``)."""
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab.size):
        raise ValueError(f"{where}: token id {int(ids.max() if ids.max() >= vocab.size else ids.min())} is "
                         f"outside the vocabulary of {vocab.size} tokens given to score_items")
    return vocab[ids].tolist()


# ------------------------------------------------------------------------------ language models
class StreamEvaluator:
    """Loss, perplexity and bits per token over the *whole* stream of a BPTT layout, state carried throughout.

    Every window is scored, the last one possibly shorter, so the figure covers every target of the
    layout (``layout.num_targets``) and is comparable with published stream perplexities. The
    compiled window function is kept between calls (one per model), so per-epoch validation does not
    recompile. :meth:`score_items` adds per-sentence statistics.
    """

    ITEM_KIND = 'sentence-of-a-token-stream'  # the first part of its items' content keys (item_key)

    def __init__(self, layout, jit_compile: bool = True):
        self.layout = layout
        self.jit_compile = jit_compile
        self._fns: dict[int, Callable] = {}
        self._item_fns: dict[int, Callable] = {}

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
        return self._scores(total, count)

    @staticmethod
    def _scores(total: float, count: int) -> dict[str, float]:
        loss = total / max(count, 1)
        return {
            "loss": loss,
            "perplexity": float(math.exp(min(loss, 700.0))),
            "bits_per_token": loss / math.log(2),
            "tokens": count,
        }

    # ----------------------------------------------------------------------------- per sentence
    def _item_fn(self, model):
        if id(model) not in self._item_fns:

            def window(ids, targets, state):
                logits, state = model.forward(ids, state, training=False)
                xent = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
                xent = tf.cast(xent, tf.float64)
                return tf.reduce_sum(xent), xent, state

            self._item_fns[id(model)] = tf.function(window, jit_compile=self.jit_compile, reduce_retracing=True)
        return self._item_fns[id(model)]

    def _stream_chunks(self, stream):
        """The split's ids in corpus order, in chunks: ``stream`` when given; a
        :class:`~preprocessing.streams.TokenStream`'s records read from its shards (already
        verified when it was made, counted again); an in-memory layout's laid-out ids."""
        layout = self.layout
        if stream is not None:
            yield np.asarray(stream).reshape(-1)
        elif hasattr(layout, "data_dir") and hasattr(layout, "split"):
            from preprocessing.input_fns import iter_split

            for example in iter_split(layout.data_dir, layout.split, verify=False):
                yield example["ids"]
        else:
            yield np.concatenate([layout.inputs[:, :1], layout.targets], axis=1).reshape(-1)

    def _sentences(self, vocab: np.ndarray, stream) -> tuple[np.ndarray, np.ndarray]:
        """``(ends, keys)``: each sentence's end in the stream (exclusive) and content key. A sentence
        is the ids up to and including an ``<eos>`` (ids after the last one make a last sentence)."""
        ends: list[int] = []
        keys: list[str] = []
        pending: list[np.ndarray] = []
        position = 0

        def close():
            nonlocal position, pending
            ids = np.concatenate(pending)
            pending = []
            position += ids.size
            ends.append(position)
            keys.append(item_key(self.ITEM_KIND, _tokens(vocab, ids, f"sentence {len(keys)}")))

        for chunk in self._stream_chunks(stream):
            chunk = np.asarray(chunk).reshape(-1)
            start = 0
            for cut in (np.flatnonzero(chunk == EOS_ID) + 1).tolist():
                pending.append(chunk[start:cut])
                close()
                start = cut
            if start < chunk.size:
                pending.append(chunk[start:])
        if pending:
            close()
        return np.asarray(ends, np.int64), np.asarray(keys, dtype=str)

    def score_items(self, model, vocabulary, stream=None) -> tuple[dict[str, float], ItemStats]:
        """:meth:`__call__`'s figures and the split's per-sentence statistics, in one pass.

        Every target token's loss goes to the sentence the token belongs to: the target of row
        ``b``, step ``t`` of the layout (rows of ``L`` ids) is id ``b*L + t + 1`` of the split's
        stream, so the sentences' sums of negative log-likelihood and of targets add up to the
        evaluator's (a sentence's ids that are no target, e.g. a row's first id or the few dropped
        after the last row, count for nothing; a sentence may have no target at all).

        Args:
            model: the language model.
            vocabulary: the token strings in id order (the keys read them).
            stream: the split's whole id stream; by default read from a
                :class:`~preprocessing.streams.TokenStream`'s shards (a record at a time), or, for an
                in-memory layout, the ids it lays out.

        Returns ``(figures, items)``: ``items.stats`` has ``loss``, ``perplexity`` and ``bpc``, all
        ``[n, 2]`` of (nll in nats, targets); keys are :func:`~keras_models.item_stats.item_key` of
        ``("lm", tokens)``, ``<eos>`` included.
        """
        vocab = _vocabulary_array(vocabulary)
        ends, keys = self._sentences(vocab, stream)
        layout = self.layout
        row_length = int(getattr(layout, "row_length", 0) or layout.inputs.shape[1] + 1)
        if ends.size == 0 or row_length * layout.num_streams > int(ends[-1]):
            raise ValueError(f"the stream holds {int(ends[-1]) if ends.size else 0} ids, fewer than the "
                             f"{row_length * layout.num_streams} the layout lays out")
        nll, targets_per = np.zeros(ends.size), np.zeros(ends.size)
        fn = self._item_fn(model)
        state = model.initial_state(layout.num_streams)
        total, count, column = 0.0, 0, 0
        rows = np.arange(layout.num_streams, dtype=np.int64)[:, None] * row_length
        for ids, targets in layout.windows(drop_remainder=False):
            loss_sum, xent, state = fn(tf.constant(ids), tf.constant(targets), state)
            total += float(loss_sum)
            count += targets.size
            width = targets.shape[1]
            positions = (rows + (column + 1) + np.arange(width, dtype=np.int64)[None, :]).reshape(-1)
            sentence = np.searchsorted(ends, positions, side="right")
            np.add.at(nll, sentence, xent.numpy().reshape(-1))
            np.add.at(targets_per, sentence, 1.0)
            column += width
        stats = np.stack([nll, targets_per], axis=1)
        return self._scores(total, count), ItemStats(keys, {"loss": stats, "perplexity": stats, "bpc": stats})


TAG_SCHEMES = ("plain", "bio", "bioes")  # data.tag_scheme: plain tags, or spans scored by span F1


# ------------------------------------------------------------------------------ the batch protocol
def score_batches(data, batch_size: int, max_chars: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """``(positions, lengths, batch)`` over every example of ``data``, each once: the one input of the
    evaluators below.

    ``data`` is an in-memory :class:`~preprocessing.input_fns.Examples` (batches of
    :func:`~preprocessing.input_fns.eval_batches`, sorted by length over the whole split) or a
    :class:`~preprocessing.streams.ExampleStream` (its ``eval_batches``: sorted within bounded
    windows of consecutive examples). ``positions`` are the examples' ranks in corpus order,
    ``lengths`` their lengths in ids (seq2seq: source ids), ``batch`` is padded as ``pad_batch`` pads.
    """
    if isinstance(data, Examples):
        lengths = data.lengths
        for indices, batch in eval_batches(data, batch_size, max_chars):
            indices = np.asarray(indices, np.int64)
            yield indices, lengths[indices], batch
    else:
        yield from data.eval_batches(batch_size, max_chars)


class _BatchScorer:
    """One compiled function per model (batch → summed loss, count, predictions) over
    :func:`score_batches` of the evaluated split."""

    def __init__(self, examples, batch_size: int, max_chars: int | None, jit_compile: bool):
        self.examples = examples  # Examples (in memory) or an ExampleStream
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.jit_compile = jit_compile
        self._fns: dict[int, Callable] = {}

    def _make(self, model) -> Callable:
        raise NotImplementedError

    def fn(self, model) -> Callable:
        if id(model) not in self._fns:
            self._fns[id(model)] = tf.function(self._make(model), jit_compile=self.jit_compile, reduce_retracing=True)
        return self._fns[id(model)]

    def _scored(self, model) -> Iterator[tuple[np.ndarray, np.ndarray, dict, float, float, Any]]:
        """``(positions, lengths, batch, loss sum, count, predictions)`` per batch."""
        fn = self.fn(model)
        for positions, lengths, batch in score_batches(self.examples, self.batch_size, self.max_chars):
            loss_sum, count, predicted = fn({k: tf.constant(v) for k, v in batch.items()})
            yield positions, lengths, batch, float(loss_sum), float(count), predicted.numpy()


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


def _filled(keys: np.ndarray, what: str) -> np.ndarray:
    """The per-item keys as str, every corpus position given one (else the split was not read whole)."""
    missing = [i for i, k in enumerate(keys.tolist()) if k is None]
    if missing:
        raise ValueError(f"{len(missing)} {what}(s) of the split were never scored (first: {what} {missing[0]})")
    return keys.astype(str)


def _confusion(gold: np.ndarray, pred: np.ndarray, size: int) -> np.ndarray:
    """``[size, size]`` counts of (gold id, predicted id) pairs (rows: gold)."""
    flat = np.asarray(gold, np.int64) * size + np.asarray(pred, np.int64)
    return np.bincount(flat, minlength=size * size).reshape(size, size)


# ------------------------------------------------------------------------ taggers, classifiers
class TaggingEvaluator(_BatchScorer):
    """Token loss and accuracy (and span P/R/F1 for BIO/BIOES tags) of a tagger over a split.

    Args:
        examples: the split: in memory (``preprocessing.input_fns.load_examples``) or read from its
            shards (``preprocessing.streams.ExampleStream``).
        tag_names: tag strings in id order (``LabelSet.labels``): the ``N`` tags the model predicts.
        scheme: ``"plain"``, ``"bio"`` or ``"bioes"``.
        batch_size: examples per batch.
        max_chars: characters per token for the character encoder.
        jit_compile: compile the batch function with XLA.
        unseen_names: the names of gold tags unseen in training: gold id ``N + k`` is
            ``unseen_names[k]``. A gold id outside ``0 .. N + len(unseen_names) - 1`` is a
            ``ValueError`` (raised by the constructor for examples in memory, while scoring for a stream).

    ``__call__(model)`` returns ``{"loss", "accuracy", "tokens"}`` plus ``precision``, ``recall``,
    ``f1`` for span schemes. It keeps sums, not items: batch by batch it adds the loss, token,
    correct and unseen counts, seqeval's span counts per type (:func:`span_counts`) and the
    confusion matrix over tag ids (:attr:`confusion`, rows: gold, over :attr:`confusion_labels`),
    so a split of any size is scored in the memory of a batch. :meth:`predict` gives the gold and
    predicted tag strings per sentence (it holds them all: tests and small tools).

    Unseen gold tags: the model can never predict them, so such a token is always wrong.
    ``accuracy`` is over every token (``tokens``, unseen ones included); ``loss`` averages only over
    the tokens the model's ``loss_sum`` scores (a token with an unseen tag is left out, and with a
    CRF every token of a sentence holding one). Span scores read the gold strings with the unseen
    names, so a gold span of an unseen type is a false negative (it appears in
    ``last_report["per_type"]`` with its support). With ``unseen_names`` (or unseen ids) the result
    also has ``unseen``, the number of tokens with an unseen gold tag, and ``last_report`` has
    ``"unseen": {name: tokens}``; without them, both are exactly as before.
    """

    ITEM_KIND = 'tagged-sentence'  # the first part of its items' content keys (item_key)

    def __init__(self, examples, tag_names: list[str], scheme: str = "plain", batch_size: int = 32,
                 max_chars: int | None = None, jit_compile: bool = False, unseen_names: list[str] | tuple = ()):
        super().__init__(examples, batch_size, max_chars, jit_compile)
        self.tag_names = list(tag_names)
        self.unseen_names = list(unseen_names)
        self.scheme = scheme
        self.last_report: dict[str, Any] | None = None
        self.confusion: np.ndarray | None = None
        self.scored_model = None  # the model the last call scored (its confusion matrix is kept)
        _check_unseen_names(self.tag_names, self.unseen_names, "tag")
        if isinstance(examples, Examples) and examples.tags:
            flat = np.concatenate([np.zeros(0, np.int64), *examples.tags])
            limit = len(self.tag_names) + len(self.unseen_names)
            if flat.size and (flat.min() < 0 or flat.max() >= limit):
                for i, tags in enumerate(examples.tags):  # name the first sentence at fault
                    _check_ids(tags, len(self.tag_names), len(self.unseen_names), "tag", f"sentence {i}")

    @property
    def confusion_labels(self) -> list[str]:
        """Names of the rows and columns of :attr:`confusion`: the tags, then the unseen ones."""
        return self.tag_names + self.unseen_names

    def _make(self, model):
        def score(batch):
            inputs = model_inputs(batch)
            loss_sum, count = model.loss_sum(inputs, batch["tags"], training=False)
            return tf.cast(loss_sum, tf.float64), tf.cast(count, tf.float64), model.predict_tags(inputs)

        return score

    def _sentences(self, model):
        """``(positions, gold ids, predicted ids, loss sum, count, token ids)`` per batch, one id array
        per sentence."""
        known, unseen = len(self.tag_names), len(self.unseen_names)
        for positions, lengths, batch, loss_sum, count, tags in self._scored(model):
            gold = [batch["tags"][row, :n] for row, n in enumerate(lengths)]
            if not isinstance(self.examples, Examples):  # checked up front for examples in memory
                flat = np.concatenate(gold)
                if flat.size and (flat.min() < 0 or flat.max() >= known + unseen):
                    for p, g in zip(positions, gold):  # name the sentence at fault
                        _check_ids(g, known, unseen, "tag", f"sentence {int(p)}")
            yield (positions, gold, [tags[row, :n] for row, n in enumerate(lengths)], loss_sum, count,
                   [batch["ids"][row, :n] for row, n in enumerate(lengths)])

    def predict(self, model) -> tuple[list[list[str]], list[list[str]], float]:
        """Gold and predicted tag sequences (corpus order) and the summed loss; they are held in
        memory (tests, small tools; :meth:`__call__` keeps sums only).

        Gold tags unseen in training appear under their names (``unseen_names``); the summed loss
        leaves out what ``model.loss_sum`` leaves out (see the class docstring).
        """
        n = len(self.examples)
        gold: list[list[str] | None] = [None] * n
        pred: list[list[str] | None] = [None] * n
        total = 0.0
        names = np.array(self.confusion_labels, dtype=object)
        for positions, golds, preds, loss_sum, _, _ in self._sentences(model):
            total += loss_sum
            for p, g, q in zip(positions, golds, preds):
                gold[p], pred[p] = names[g].tolist(), names[q].tolist()
        return gold, pred, total  # type: ignore[return-value]

    def __call__(self, model) -> dict[str, float]:
        return self._evaluate(model)

    def score_items(self, model, vocabulary) -> tuple[dict[str, float], ItemStats]:
        """:meth:`__call__`'s figures and the per-sentence statistics, in one pass.

        ``vocabulary``: the token strings in id order. ``items.stats``: ``accuracy`` ``[n, 2]``
        (correct tokens, tokens: unseen gold tags count as tokens, never as correct) and, for span
        schemes, ``f1``, ``precision``, ``recall`` ``[n, 3]`` (correct, wrongly predicted, missed
        spans); keys: ``("tagging", tokens, gold tag names)``, in corpus order. The loss is left
        out: ``model.loss_sum`` sums a batch in float32 (with a CRF, per sentence), so per-sentence
        sums would not reproduce it.
        """
        vocab, n = _vocabulary_array(vocabulary), len(self.examples)
        names = np.array(self.confusion_labels, dtype=object)
        keys = np.empty(n, object)
        accuracy = np.zeros((n, 2))
        spans = np.zeros((n, 3)) if self.scheme != "plain" else None

        def collect(positions, golds, preds, ids, gold_names, pred_names):
            positions = np.asarray(positions, np.int64)
            for p, x, g in zip(positions.tolist(), ids, golds):
                keys[p] = item_key(self.ITEM_KIND, _tokens(vocab, x, f"sentence {p}"), names[g].tolist())
            accuracy[positions, 0] = [int(np.sum(g == q)) for g, q in zip(golds, preds)]
            accuracy[positions, 1] = [g.size for g in golds]
            if spans is not None:
                spans[positions] = sentence_span_counts(gold_names, pred_names, self.scheme)

        scores = self._evaluate(model, collect)
        stats = {"accuracy": accuracy}
        if spans is not None:
            stats.update(f1=spans, precision=spans, recall=spans)
        return scores, ItemStats(_filled(keys, "sentence"), stats)

    def _evaluate(self, model, collect: Callable | None = None) -> dict[str, float]:
        known, size = len(self.tag_names), len(self.confusion_labels)
        names = np.array(self.confusion_labels, dtype=object)
        total = scored = 0.0
        tokens = correct = 0
        unseen_counts = np.zeros(len(self.unseen_names), np.int64)
        confusion = np.zeros((size, size), np.int64)
        spans: dict[str, np.ndarray] = {}
        for positions, golds, preds, loss_sum, count, ids in self._sentences(model):
            total += loss_sum
            scored += count
            gold, pred = np.concatenate(golds).astype(np.int64), np.concatenate(preds).astype(np.int64)
            tokens += gold.size
            correct += int(np.sum(gold == pred))  # predictions are known tags: an unseen gold tag is never matched
            unseen_counts += np.bincount(gold[gold >= known] - known, minlength=len(self.unseen_names))
            confusion += _confusion(gold, pred, size)
            gold_names = pred_names = None
            if self.scheme != "plain":
                gold_names, pred_names = [names[g].tolist() for g in golds], [names[q].tolist() for q in preds]
                batch_spans = span_counts(gold_names, pred_names, self.scheme)
                for name, c in batch_spans.items():
                    spans[name] = spans.get(name, 0) + c
            if collect is not None:
                collect(positions, golds, preds, ids, gold_names, pred_names)
        unseen = int(unseen_counts.sum())
        # Without unseen tags every token is scored: the loss is over them all, as it always was.
        denominator = tokens if not unseen else scored
        out = {"loss": total / max(denominator, 1), "accuracy": correct / max(tokens, 1), "tokens": tokens}
        report: dict[str, Any] = {}
        if self.scheme != "plain":
            figures = span_report(spans)
            out.update(precision=figures["precision"], recall=figures["recall"], f1=figures["f1"])
            report["per_type"] = figures["per_type"]
        if self.unseen_names or unseen:
            out["unseen"] = unseen
            report["unseen"] = {name: int(c) for name, c in zip(self.unseen_names, unseen_counts)}
        self.last_report, self.confusion, self.scored_model = report, confusion, model
        return out


class ClassificationEvaluator(_BatchScorer):
    """Loss, accuracy and macro-F1 of a classifier over a split; keeps the last confusion matrix.

    Args:
        examples: the split: in memory (``preprocessing.input_fns.load_examples``) or read from its
            shards (``preprocessing.streams.ExampleStream``).
        label_names: class names in id order: the ``N`` classes the model predicts.
        batch_size: examples per batch.
        jit_compile: compile the batch function with XLA.
        unseen_names: the names of gold labels unseen in training: gold id ``N + k`` is
            ``unseen_names[k]``. A gold id outside ``0 .. N + len(unseen_names) - 1`` is a
            ``ValueError`` (raised by the constructor for examples in memory, while scoring for a stream).

    ``__call__(model)`` returns ``{"loss", "accuracy", "macro_f1", "examples"}``; ``last_report`` is
    scikit-learn's classification report and ``confusion`` the confusion matrix (rows: gold,
    columns: predicted), both over ``confusion_labels`` (``label_names + unseen_names``, in id order).
    The matrix is summed batch by batch and the report and macro-F1 are computed from it (each
    cell a weighted sample), so nothing per document is kept.

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

    ITEM_KIND = 'labelled-document'  # the first part of its items' content keys (item_key)

    def __init__(self, examples, label_names: list[str], batch_size: int = 32, jit_compile: bool = False,
                 unseen_names: list[str] | tuple = ()):
        super().__init__(examples, batch_size, None, jit_compile)
        self.label_names = list(label_names)
        self.unseen_names = list(unseen_names)
        self.confusion: np.ndarray | None = None
        self.last_report: dict[str, Any] | None = None
        self.scored_model = None  # the model the last call scored
        _check_unseen_names(self.label_names, self.unseen_names, "label")
        if isinstance(examples, Examples) and examples.labels is not None:
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

    def _batches(self, model):
        """``(positions, gold, predicted, loss sum, count, lengths, ids)`` per batch."""
        known, unseen = len(self.label_names), len(self.unseen_names)
        for positions, lengths, batch, loss_sum, count, pred in self._scored(model):
            labels = batch["label"]
            if not isinstance(self.examples, Examples) and (labels.min() < 0 or labels.max() >= known + unseen):
                for p, g in zip(positions, labels):  # name the document at fault (checked up front in memory)
                    _check_ids(g, known, unseen, "label", f"document {int(p)}")
            yield positions, labels, pred, loss_sum, count, lengths, batch["ids"]

    def predict(self, model) -> tuple[np.ndarray, float]:
        """Predicted label ids in corpus order and the summed loss (over the documents with a known
        gold label)."""
        pred = np.zeros(len(self.examples), np.int32)
        total = 0.0
        for positions, _, p, loss_sum, _, _, _ in self._batches(model):
            total += loss_sum
            pred[positions] = p
        return pred, total

    def __call__(self, model) -> dict[str, float]:
        return self._evaluate(model)

    def score_items(self, model, vocabulary) -> tuple[dict[str, float], ItemStats]:
        """:meth:`__call__`'s figures and the per-document statistics, in one pass.

        ``vocabulary``: the token strings in id order. ``items.stats``: ``accuracy`` ``[n, 2]``
        (correct, 1; a document with an unseen gold label is never correct) and ``macro_f1``
        ``[n, 3C]`` over the ``C`` :attr:`confusion_labels` (known, then unseen): the document's
        (tp, fp, fn) for class 0, then class 1, ... (a right answer is a tp of its class, a wrong one
        a fn of the gold class and a fp of the predicted one). Keys: ``("classification", tokens,
        gold label name)``, in corpus order. The loss is left out (as for taggers).
        """
        vocab, n = _vocabulary_array(vocabulary), len(self.examples)
        names, known, size = self.confusion_labels, len(self.label_names), len(self.confusion_labels)
        keys = np.empty(n, object)
        accuracy = np.zeros((n, 2))
        per_class = np.zeros((n, size, 3))

        def collect(positions, gold, pred, lengths, ids):
            positions, gold, pred = (np.asarray(a, np.int64) for a in (positions, gold, pred))
            for row, p in enumerate(positions.tolist()):
                keys[p] = item_key(self.ITEM_KIND, _tokens(vocab, ids[row, : lengths[row]], f"document {p}"),
                                   names[int(gold[row])])
            right = (gold == pred) & (gold < known)
            accuracy[positions, 0], accuracy[positions, 1] = right, 1.0
            per_class[positions[right], gold[right], 0] = 1.0
            per_class[positions[~right], pred[~right], 1] = 1.0
            per_class[positions[~right], gold[~right], 2] = 1.0

        scores = self._evaluate(model, collect)
        return scores, ItemStats(_filled(keys, "document"),
                                 {"accuracy": accuracy, "macro_f1": per_class.reshape(n, 3 * size)})

    def _evaluate(self, model, collect: Callable | None = None) -> dict[str, float]:
        from sklearn.metrics import classification_report, f1_score

        size, known = len(self.confusion_labels), len(self.label_names)
        confusion = np.zeros((size, size), np.int64)
        total = scored = 0.0
        for positions, gold, pred, loss_sum, count, lengths, ids in self._batches(model):
            total += loss_sum
            scored += count
            confusion += _confusion(gold, pred, size)
            if collect is not None:
                collect(positions, gold, pred, lengths, ids)
        n = int(confusion.sum())
        unseen_counts = confusion[known:].sum(axis=1)
        unseen = int(unseen_counts.sum())
        # the matrix's cells as weighted samples: scikit-learn's figures of the documents themselves
        gold, pred = np.nonzero(confusion)
        weights = confusion[gold, pred]
        labels = list(range(size))
        self.confusion, self.scored_model = confusion, model
        self.last_report = classification_report(gold, pred, labels=labels, target_names=self.confusion_labels,
                                                 sample_weight=weights, output_dict=True, zero_division=0)
        # Without unseen labels every document is scored: the loss is over them all, as it always was.
        out = {
            "loss": total / max(n if not unseen else scored, 1),
            "accuracy": int(np.trace(confusion[:known, :known])) / n if n else 0.0,
            "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", sample_weight=weights,
                                       zero_division=0)),
            "examples": n,
        }
        if self.unseen_names or unseen:
            out["unseen"] = unseen
            self.last_report["unseen"] = {name: int(c) for name, c in zip(self.unseen_names, unseen_counts)}
        return out


# ------------------------------------------------------------------------------------ seq2seq
class _InCorpusOrder:
    """Items put by corpus position, given back in corpus order as soon as every earlier one is in.

    Evaluation batches come in length order within windows of consecutive examples, so what waits
    here is at most one window (a stream's ``eval_window`` batches); :attr:`most` records the most
    that ever waited."""

    def __init__(self):
        self.waiting: dict[int, Any] = {}
        self.next = 0
        self.most = 0

    def put(self, position: int, item) -> None:
        self.waiting[position] = item
        self.most = max(self.most, len(self.waiting))

    def ready(self) -> Iterator[Any]:
        while self.next in self.waiting:
            yield self.waiting.pop(self.next)
            self.next += 1


class Seq2SeqEvaluator(_BatchScorer):
    """Teacher-forced loss / perplexity and decoded-output error rates of an encoder-decoder over a split.

    Every source is decoded once per batch it appears in (greedy, or beam search with
    ``beam_size > 1``) and scored once, however many references it has: a source's references are
    the consecutive examples of the split (in corpus order) with its ids, as the ``cmudict`` and
    ``pairs`` readers write a word's alternate pronunciations, and an output is correct if it
    equals any of them. The figures are summed source by source (error counts, sacrebleu's
    statistics), so a split of any size is scored in the memory of a window of batches.

    Args:
        examples: the split: in memory (``preprocessing.input_fns.load_examples``; task ``seq2seq``)
            or read from its shards (``preprocessing.streams.ExampleStream``).
        target_vocab: target tokens in id order.
        batch_size: sources per batch.
        beam_size: 1 = greedy search.
        max_length: the longest output, in tokens (``<eos>`` included).
        length_penalty: beam search's length normalization exponent.
        text_metrics: also compute BLEU and chrF (sacrebleu) over the detokenized outputs.
        target_level: ``"word"`` or ``"char"`` (how outputs are joined into text for BLEU / chrF).
        jit_compile: compile the loss function with XLA.

    ``__call__(model)`` returns ``{"loss", "perplexity", "wer", "per", "sources"}`` (+ ``bleu``,
    ``chrf``); :meth:`decode` the outputs of given sources (samples, attention maps), and
    :meth:`sample_sources` the split's first distinct sources.
    """

    ITEM_KIND = 'source-with-references'  # the first part of its items' content keys (item_key)

    def __init__(self, examples, target_vocab: list[str], batch_size: int = 64, beam_size: int = 1,
                 max_length: int = 50, length_penalty: float = 1.0, text_metrics: bool = False,
                 target_level: str = "word", jit_compile: bool = False):
        super().__init__(examples, batch_size, None, jit_compile)
        self.target_vocab = list(target_vocab)
        self.beam_size = beam_size
        self.max_length = max_length
        self.length_penalty = length_penalty
        self.text_metrics = text_metrics
        self.target_level = target_level
        self.most_waiting = 0  # the most examples the last call held waiting for their corpus turn
        self._search = None

    def _tokens(self, ids) -> list[str]:
        from preprocessing.vocab import EOS_ID

        out = []
        for i in ids:
            if int(i) in (0, EOS_ID):
                break
            out.append(self.target_vocab[int(i)])
        return out

    def sample_sources(self, n: int) -> list[tuple]:
        """The first ``n`` distinct sources of the split in corpus order (only its head is read)."""
        data, wanted = self.examples, max(n, 0)
        if not wanted:
            return []
        m = 4 * wanted
        while True:
            head = data if isinstance(data, Examples) else data.head(m)
            sources: list[tuple] = []
            for ids in head.ids:
                source = tuple(int(x) for x in ids)
                if source not in sources:
                    sources.append(source)
                    if len(sources) == wanted:
                        return sources
            if head is data or len(head) < m:
                return sources
            m *= 4

    def _make(self, model):
        def score(batch):
            loss_sum, count = model.loss_sum(model_inputs(batch), batch["target_out"], training=False)
            return tf.cast(loss_sum, tf.float64), tf.cast(count, tf.float64), tf.zeros([0], tf.int32)

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

    def _searcher(self, model):
        if self._search is None or self._search[0] is not model:
            self._search = (model, self._search_fn(model))
        return self._search[1]

    def decode(self, model, sources: list[tuple]) -> list[list[str]]:
        """The output tokens for each of ``sources`` (id sequences), in batches of similar length."""
        from preprocessing.input_fns import bucket_length

        search = self._searcher(model)
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

    def _decode_rows(self, search, source_ids: np.ndarray) -> list[list[str]]:
        """The output of every row of a padded batch of sources, each distinct row decoded once."""
        distinct, inverse = np.unique(source_ids, axis=0, return_inverse=True)
        tokens = search(tf.constant(distinct)).numpy()
        outputs = [self._tokens(t) for t in tokens]
        return [outputs[i] for i in np.asarray(inverse).reshape(-1)]

    def __call__(self, model) -> dict[str, float]:
        return self._evaluate(model)

    def score_items(self, model, vocabulary) -> tuple[dict[str, float], ItemStats]:
        """:meth:`__call__`'s figures and the per-source statistics, in one pass.

        An item is a source with all its references (the consecutive examples with its ids): what
        the error rates count. ``vocabulary``: the *source* token strings in id order.
        ``items.stats``: ``wer`` ``[n, 2]`` (1 if the output matches none of the references, 1
        source), ``per`` ``[n, 2]`` (edit errors against the closest reference, its length) and,
        with ``text_metrics``, ``bleu`` ``[n, 10]`` and ``chrf`` ``[n, 18]`` (sacrebleu's sentence
        statistics, see :meth:`TextStatistics.items`). Keys: ``("seq2seq", source tokens,
        references as token lists)``, in corpus order. The teacher-forced loss and perplexity are
        left out: ``model.loss_sum`` sums a batch of examples in float32.
        """
        vocab = _vocabulary_array(vocabulary)
        keys: list[str] = []
        rates: list[tuple[int, int, int]] = []

        def collect(ids, references, counts):
            tokens = _tokens(vocab, ids, f"source {len(keys)}")
            keys.append(item_key(self.ITEM_KIND, tokens, [list(r) for r in references]))
            rates.append(counts)

        scores, text = self._evaluate(model, collect)
        counts = np.asarray(rates, np.float64).reshape(-1, 3)
        stats = {"wer": np.stack([counts[:, 0], np.ones(len(counts))], axis=1), "per": counts[:, 1:3]}
        if text is not None:
            stats.update(text.items())
        return scores, ItemStats(np.asarray(keys, dtype=str), stats)

    def _evaluate(self, model, collect: Callable | None = None):
        search = self._searcher(model)
        total = count = 0.0
        wrong = errors = length = sources = 0
        text = (TextStatistics("" if self.target_level == "char" else " ", keep_items=collect is not None)
                if self.text_metrics else None)
        run: list = []  # the source being read: [ids, its output, its references, its id array]

        def finish():
            nonlocal wrong, errors, length, sources
            if run:
                _, hypothesis, references, ids = run
                w, e, n = error_counts(hypothesis, references)
                wrong, errors, length, sources = wrong + w, errors + e, length + n, sources + 1
                if text is not None:
                    text.add(hypothesis, references)
                if collect is not None:
                    collect(ids, references, (w, e, n))

        in_order = _InCorpusOrder()
        for positions, lengths, batch, loss_sum, n, _ in self._scored(model):
            total += loss_sum
            count += n
            outputs = self._decode_rows(search, batch["source_ids"])
            for row, p in enumerate(positions):
                ids = batch["source_ids"][row, : lengths[row]].copy()  # not a view: the batch is not kept
                in_order.put(int(p), (ids.tobytes(), outputs[row], self._tokens(batch["target_out"][row]), ids))
            for source, output, reference, ids in in_order.ready():
                if run and run[0] == source:  # one more reference of the same source
                    run[2].append(reference)
                else:
                    finish()
                    run = [source, output, [reference], ids]
        finish()
        self.most_waiting = in_order.most
        loss = total / max(count, 1.0)
        out = {"loss": loss, "perplexity": float(math.exp(min(loss, 700.0))),
               "wer": wrong / max(sources, 1), "per": errors / max(length, 1), "sources": sources}
        if text is not None:
            out.update(text.scores())
        return out if collect is None else (out, text)
