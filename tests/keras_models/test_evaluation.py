"""Scoring on a whole split: LM stream perplexity; for taggers and classifiers span P/R/F1, token loss /
accuracy in corpus order, macro-F1 and confusion."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_models.evaluation import ClassificationEvaluator, StreamEvaluator, TaggingEvaluator, span_scores
from keras_models.models.language_model import RNNLanguageModel
from keras_models.models.tagger import RNNTagger
from preprocessing.input_fns import Examples, bptt_layout

VOCAB, CHAR_VOCAB, MAX_CHARS = 12, 9, 4
TAG_NAMES = ["B-X", "I-X", "O"]


# ---------------------------------------------------------------------------------- StreamEvaluator
def test_stream_evaluator_scores_every_target_with_carried_state():
    keras.utils.set_random_seed(3)
    model = RNNLanguageModel(11, cell="lstm", num_layers=1, embedding_dim=4, hidden_dim=4, seed=3)
    model.build((None, None))
    # A learnable stream: mostly a repeating pattern with some noise.
    rng = np.random.default_rng(0)
    base = np.tile(np.arange(4, 11), 203 // 7 + 1)[:203]
    noise = rng.integers(4, 11, 203)
    stream = np.where(rng.random(203) < 0.2, noise, base).astype(np.int32)
    layout = bptt_layout(stream, 2, 7)
    scores = StreamEvaluator(layout, jit_compile=False)(model)
    assert scores["tokens"] == layout.num_targets == 2 * (101 - 1)
    # Reference: the whole row in one call (state carried implicitly) gives the same loss.
    logits, _ = model.forward(layout.inputs)
    xent = keras.losses.sparse_categorical_crossentropy(layout.targets, logits, from_logits=True)
    assert scores["loss"] == pytest.approx(float(np.mean(xent)), rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))


# ------------------------------------------------------------------------------------ span_scores
def test_span_scores_bio_conlleval_semantics():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"], ["B-PER", "I-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"], ["I-PER", "I-PER"]]
    # gold spans: PER(0:2), LOC(3), ORG(0:2), PER(0:2); predicted: PER(0:2), ORG(3), ORG(0), PER(0:2)
    # (an I- after O starts a span, as conlleval reads it): 2 of 4 right either way
    scores = span_scores(gold, pred, "bio")
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(0.5)
    per_type = scores["per_type"]
    assert set(per_type) == {"PER", "LOC", "ORG"}
    assert per_type["PER"] == {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 2.0}
    assert per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1.0}
    assert per_type["ORG"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1.0}


def test_span_scores_bio_partial_credit_is_none():
    gold = [["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"]]
    pred = [["B-LOC", "I-LOC", "O", "O", "B-PER"]]  # LOC one token short: wrong
    scores = span_scores(gold, pred, "bio")
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    perfect = span_scores(gold, gold, "bio")
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)
    nothing = span_scores(gold, [["O"] * 5], "bio")
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)


def test_span_scores_strict_bioes_drops_malformed_spans():
    gold = [["B-PER", "E-PER", "O", "S-LOC"], ["B-ORG", "I-ORG", "E-ORG"], ["S-PER", "O"], ["B-MISC", "E-MISC"]]
    pred = [["B-PER", "E-PER", "O", "S-LOC"], ["B-ORG", "I-ORG", "O"], ["S-PER", "S-LOC"], ["I-MISC", "E-MISC"]]
    # gold: 5 spans. predicted, well-formed: PER, LOC, PER, LOC(s2) = 4; "B-ORG I-ORG" never ends (no E-)
    # and "I-MISC E-MISC" never begins (no B-): both malformed, neither counts. Right: PER, LOC, PER = 3.
    scores = span_scores(gold, pred, "bioes")
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))
    per_type = scores["per_type"]
    assert per_type["PER"]["precision"] == 1.0 and per_type["PER"]["recall"] == 1.0
    assert per_type["LOC"]["precision"] == pytest.approx(0.5) and per_type["LOC"]["recall"] == 1.0
    assert per_type["ORG"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1.0}
    assert per_type["MISC"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1.0}
    # a lone malformed prediction scores nothing at all
    alone = span_scores([["B-PER", "E-PER"]], [["B-PER", "I-PER"]], "bioes")
    assert (alone["precision"], alone["recall"], alone["f1"]) == (0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------ TaggingEvaluator
LENGTHS = [5, 2, 8, 1, 3, 6, 2, 4, 7]  # corpus order; batches of 3 are sorted by length, so reordered


def _tagging_examples(with_chars=False):
    rng = np.random.default_rng(4)
    ids = [rng.integers(1, VOCAB, n).astype(np.int32) for n in LENGTHS]
    tags = [rng.integers(0, len(TAG_NAMES), n).astype(np.int32) for n in LENGTHS]
    chars = None
    if with_chars:
        chars = [[rng.integers(1, CHAR_VOCAB, rng.integers(1, 7)).astype(np.int32) for _ in x] for x in ids]
    return Examples(task="tagging", ids=ids, tags=tags, chars=chars)


def _tagger(crf=False):
    keras.utils.set_random_seed(5)
    m = RNNTagger(VOCAB, len(TAG_NAMES), cell="gru", embedding_dim=4, hidden_dim=4, use_crf=crf,
                  char_vocab_size=CHAR_VOCAB if crf else 0, char_embedding_dim=3, char_hidden_dim=2, seed=5)
    m.build({"ids": (None, None), "chars": (None, None, MAX_CHARS)} if crf else (None, None))
    return m


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_tagging_evaluator_matches_a_numpy_reference_in_corpus_order():
    ex = _tagging_examples()
    model = _tagger()
    evaluator = TaggingEvaluator(ex, TAG_NAMES, scheme="bio", batch_size=3)
    # reference: every sentence alone (no padding), NumPy cross-entropy and argmax
    total, correct, preds = 0.0, 0, []
    for ids, tags in zip(ex.ids, ex.tags):
        logp = _log_softmax(np.asarray(model(ids[None]), np.float64)[0])
        total -= logp[np.arange(len(ids)), tags].sum()
        pred = logp.argmax(-1)
        correct += int((pred == tags).sum())
        preds.append([TAG_NAMES[t] for t in pred])
    tokens = sum(LENGTHS)
    gold_names = [[TAG_NAMES[t] for t in tags] for tags in ex.tags]

    gold, pred, summed = evaluator.predict(model)
    assert gold == gold_names
    assert pred == preds  # realigned to corpus order
    assert [len(p) for p in pred] == LENGTHS  # padding is cut off
    assert summed == pytest.approx(total, rel=1e-5)

    scores = evaluator(model)
    assert scores["tokens"] == tokens
    assert scores["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(correct / tokens)
    spans = span_scores(gold_names, preds, "bio")
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(
        (spans["precision"], spans["recall"], spans["f1"]))
    assert evaluator.last_report["per_type"] == spans["per_type"]
    # the compiled function is kept: a second call neither retraces per model nor changes the result
    assert evaluator(model) == scores and len(evaluator._fns) == 1


def test_tagging_evaluator_plain_scheme_reports_no_spans():
    ex = _tagging_examples()
    scores = TaggingEvaluator(ex, ["A", "B", "C"], scheme="plain", batch_size=4)(_tagger())
    assert set(scores) == {"loss", "accuracy", "tokens"}


def test_tagging_evaluator_with_crf_and_characters():
    ex = _tagging_examples(with_chars=True)
    model = _tagger(crf=True)
    total, correct, preds = 0.0, 0, []
    for k, (ids, tags) in enumerate(zip(ex.ids, ex.tags)):
        chars = np.zeros((1, len(ids), MAX_CHARS), np.int32)
        for j, word in enumerate(ex.chars[k]):
            chars[0, j, : min(len(word), MAX_CHARS)] = word[:MAX_CHARS]
        inputs = {"ids": ids[None], "chars": chars}
        loss_sum, count = model.loss_sum(inputs, tags[None])
        assert float(count) == len(ids)
        total += float(loss_sum)
        pred = np.asarray(model.predict_tags(inputs))[0]
        correct += int((pred == tags).sum())
        preds.append([TAG_NAMES[t] for t in pred])
    evaluator = TaggingEvaluator(ex, TAG_NAMES, scheme="plain", batch_size=4, max_chars=MAX_CHARS)
    gold, pred, summed = evaluator.predict(model)
    assert pred == preds
    assert summed == pytest.approx(total, rel=1e-5)
    scores = evaluator(model)
    assert scores["loss"] == pytest.approx(total / sum(LENGTHS), rel=1e-5)
    assert scores["accuracy"] == pytest.approx(correct / sum(LENGTHS))


# ------------------------------------------------------------------------------------ ClassificationEvaluator
class FixedLogits(keras.Model):
    """Logits looked up from the first token id: a classifier whose every answer is known."""

    def __init__(self, table):
        super().__init__()
        self.table = np.asarray(table, np.float32)

    def call(self, ids, training=None):
        return ops.take(ops.convert_to_tensor(self.table), ids[:, 0], axis=0)


TABLE = [[0, 0, 0], [2, 0, 0], [0, 3, 0], [0, 0, 1], [0.5, 0, -1]]  # id → logits; ids 1, 4 → class 0


def test_classification_evaluator_accuracy_macro_f1_and_confusion():
    # corpus order; lengths differ so batches (sorted by length) reorder the examples
    first = [1, 4, 2, 2, 3, 3, 3, 1]
    gold = np.array([0, 0, 0, 1, 1, 2, 2, 2], np.int32)
    # predictions:  [0, 0, 1, 1, 2, 2, 2, 0]
    lengths = [5, 2, 7, 1, 3, 6, 2, 4]
    ids = [np.array([f] + [9] * (n - 1), np.int32) for f, n in zip(first, lengths)]
    ex = Examples(task="classification", ids=ids, labels=gold)
    evaluator = ClassificationEvaluator(ex, ["neg", "neu", "pos"], batch_size=3)
    model = FixedLogits(TABLE)

    pred, total = evaluator.predict(model)
    np.testing.assert_array_equal(pred, [0, 0, 1, 1, 2, 2, 2, 0])
    logp = _log_softmax(np.asarray(TABLE, np.float64))
    want_total = -sum(logp[f, g] for f, g in zip(first, gold))
    assert total == pytest.approx(want_total, rel=1e-6)

    scores = evaluator(model)
    assert scores["examples"] == 8
    assert scores["accuracy"] == pytest.approx(5 / 8)
    assert scores["loss"] == pytest.approx(want_total / 8, rel=1e-6)
    # per class: neg P=R=2/3, neu P=R=1/2, pos P=R=2/3 → macro-F1 (2/3 + 1/2 + 2/3) / 3
    assert scores["macro_f1"] == pytest.approx(11 / 18)
    np.testing.assert_array_equal(evaluator.confusion, [[2, 1, 0], [0, 1, 1], [1, 0, 2]])  # rows: gold
    report = evaluator.last_report
    assert report["neu"]["precision"] == pytest.approx(0.5) and report["neu"]["recall"] == pytest.approx(0.5)
    assert report["neg"]["f1-score"] == pytest.approx(2 / 3) and report["pos"]["support"] == 3


def test_classification_evaluator_counts_classes_missing_from_the_split():
    ex = Examples(task="classification", ids=[np.array([1], np.int32), np.array([2, 9], np.int32)],
                  labels=np.array([0, 1], np.int32))
    evaluator = ClassificationEvaluator(ex, ["neg", "neu", "pos", "other"], batch_size=8)
    scores = evaluator(FixedLogits(TABLE))
    assert scores["accuracy"] == 1.0
    assert evaluator.confusion.shape == (4, 4)  # every label has a row and a column
    np.testing.assert_array_equal(evaluator.confusion, np.diag([1, 1, 0, 0]))
    # classes with neither gold nor predicted examples score 0 in the macro average
    assert scores["macro_f1"] == pytest.approx(2 / 4)
