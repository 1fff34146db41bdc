"""Gold tags / labels unseen in training (ids >= the model's output size, kept in valid / test splits):
left out of the loss and its count, always wrong for accuracy, named and counted in the reports. With
none, the loss sums are bit-identical to the plain formula and the evaluators' results unchanged."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_models.evaluation import ClassificationEvaluator, TaggingEvaluator, span_scores
from keras_models.models.classifier import RNNClassifier
from keras_models.models.tagger import RNNTagger
from preprocessing.input_fns import Examples, eval_batches

VOCAB, CHAR_VOCAB, MAX_CHARS = 12, 9, 4
TAG_NAMES = ["B-X", "I-X", "O"]
N = len(TAG_NAMES)
LENGTHS = [5, 2, 8, 1, 3, 6, 2, 4, 7]


# ------------------------------------------------------------------------------------------ helpers
def _tagger(crf=False, chars=False):
    keras.utils.set_random_seed(5)
    m = RNNTagger(VOCAB, N, cell="gru", embedding_dim=4, hidden_dim=4, use_crf=crf,
                  char_vocab_size=CHAR_VOCAB if chars else 0, char_embedding_dim=3, char_hidden_dim=2, seed=5)
    m.build({"ids": (None, None), "chars": (None, None, MAX_CHARS)} if chars else (None, None))
    if crf:  # non-zero transitions, so the CRF terms matter
        rng = np.random.default_rng(7)
        for w in (m.crf.transitions, m.crf.start_transitions, m.crf.end_transitions):
            w.assign(rng.normal(size=w.shape).astype("float32"))
    return m


def _classifier():
    keras.utils.set_random_seed(6)
    m = RNNClassifier(VOCAB, 3, cell="gru", embedding_dim=4, hidden_dim=4, pooling="mean", seed=6)
    m.build((None, None))
    return m


def _tag_batch(seed=0, rows=(5, 3, 1, 4), width=6, with_chars=False):
    """Right-padded ids / chars / tags, padding tags junk (-1)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(rows), width), np.int32)
    tags = np.full((len(rows), width), -1, np.int32)
    chars = np.zeros((len(rows), width, MAX_CHARS), np.int32)
    for b, n in enumerate(rows):
        ids[b, :n] = rng.integers(1, VOCAB, n)
        tags[b, :n] = rng.integers(0, N, n)
        for t in range(n):
            w = rng.integers(1, MAX_CHARS + 1)
            chars[b, t, :w] = rng.integers(1, CHAR_VOCAB, w)
    inputs = {"ids": ids, "chars": chars} if with_chars else ids
    return inputs, tags


def _old_tagger_loss_sum(model, inputs, tags, training=None):
    """RNNTagger.loss_sum as it was before unseen tags (the reference for bit-identity)."""
    logits = model(inputs, training=training)
    mask = model.compute_mask_from(inputs)
    tags = ops.where(mask, ops.cast(tags, "int32"), 0)
    count = ops.sum(ops.cast(mask, "float32"))
    if model.crf is not None:
        log_likelihood = model.crf.log_likelihood(logits, tags, mask)
        return -ops.sum(ops.cast(log_likelihood, "float32")), count
    xent = keras.losses.sparse_categorical_crossentropy(tags, logits, from_logits=True)
    return ops.sum(ops.where(mask, xent, ops.zeros_like(xent))), count


def _old_classifier_loss_sum(model, ids, labels, training=None):
    logits = model(ids, training=training)
    xent = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.sum(ops.cast(xent, "float32")), ops.cast(ops.shape(labels)[0], "float32")


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _same(a, b):
    """Bit-identical float32 scalars."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype == np.float32
    assert a.tobytes() == b.tobytes(), (float(a), float(b))


# ------------------------------------------------------------------------- loss_sum, nothing unseen
@pytest.mark.parametrize("crf, chars", [(False, False), (True, False), (True, True)])
def test_tagger_loss_sum_is_bit_identical_to_the_old_formula(crf, chars):
    model = _tagger(crf=crf, chars=chars)
    for seed in range(3):
        inputs, tags = _tag_batch(seed, with_chars=chars)
        loss, count = model.loss_sum(inputs, tags)
        old_loss, old_count = _old_tagger_loss_sum(model, inputs, tags)
        _same(loss, old_loss)
        _same(count, old_count)
    # compiled as training compiles it, too
    new = tf.function(lambda x, y: model.loss_sum(x, y, training=False))
    old = tf.function(lambda x, y: _old_tagger_loss_sum(model, x, y, training=False))
    for a, b in zip(new(inputs, tags), old(inputs, tags)):
        _same(a, b)


def test_classifier_loss_sum_is_bit_identical_to_the_old_formula():
    model = _classifier()
    rng = np.random.default_rng(1)
    for n in (1, 5, 16):
        ids = rng.integers(1, VOCAB, (n, 7)).astype(np.int32)
        ids[:, 5:] = 0
        labels = rng.integers(0, 3, n).astype(np.int32)
        for a, b in zip(model.loss_sum(ids, labels), _old_classifier_loss_sum(model, ids, labels)):
            _same(a, b)
    new = tf.function(lambda x, y: model.loss_sum(x, y, training=False))
    old = tf.function(lambda x, y: _old_classifier_loss_sum(model, x, y, training=False))
    for a, b in zip(new(ids, labels), old(ids, labels)):
        _same(a, b)


# ------------------------------------------------------------------------------ loss_sum, unseen
def test_tagger_token_loss_leaves_out_unseen_tokens_and_their_count():
    model = _tagger()
    ids, tags = _tag_batch(2)
    unseen = [(0, 1), (0, 4), (2, 0), (3, 3)]
    for k, (b, t) in enumerate(unseen):
        tags[b, t] = N + k  # N, N+1, ... and one far out of range of the logits
    tags[3, 3] = 1000
    loss, count = model.loss_sum(ids, tags)
    assert np.isfinite(float(loss))
    real = ids != 0
    known = real & (tags >= 0) & (tags < N)
    assert float(count) == known.sum() == real.sum() - len(unseen)
    logp = _log_softmax(model(ids))
    want = -sum(logp[b, t, tags[b, t]] for b, t in zip(*np.nonzero(known)))
    assert float(loss) == pytest.approx(want, rel=1e-5)
    # the same as masking those tokens' gold in the old formula (it drops what the mask drops)
    logits = model(ids)
    xent = keras.losses.sparse_categorical_crossentropy(np.where(known, tags, 0), logits, from_logits=True)
    _same(loss, ops.sum(ops.where(known, xent, ops.zeros_like(xent))))
    # compiled, with XLA too: no crash, no NaN
    for jit in (False, True):
        got = tf.function(lambda x, y: model.loss_sum(x, y), jit_compile=jit)(ids, tags)
        assert float(got[0]) == pytest.approx(float(loss), rel=1e-6) and float(got[1]) == float(count)


@pytest.mark.parametrize("chars", [False, True])
def test_crf_loss_leaves_out_every_sentence_with_an_unseen_tag(chars):
    model = _tagger(crf=True, chars=chars)
    inputs, tags = _tag_batch(3, rows=(5, 3, 6, 4), with_chars=chars)
    tags[1, 2] = N  # sentence 1 has one unseen tag
    tags[2, 0] = N + 1  # sentence 2 too
    loss, count = model.loss_sum(inputs, tags)
    assert np.isfinite(float(loss))
    assert float(count) == 5 + 4  # only sentences 0 and 3 count, all their tokens
    keep = [0, 3]
    kept = {k: v[keep] for k, v in inputs.items()} if chars else inputs[keep]
    want_loss, want_count = model.loss_sum(kept, tags[keep])
    assert float(want_count) == float(count)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    # per sentence, alone: the sum of the kept ones
    alone = sum(float(model.loss_sum({k: v[[b]] for k, v in inputs.items()} if chars else inputs[[b]],
                                     tags[[b]])[0]) for b in keep)
    assert float(loss) == pytest.approx(alone, rel=1e-5)
    # a batch of nothing but such sentences: zero loss, zero count
    none_loss, none_count = model.loss_sum({k: v[[1, 2]] for k, v in inputs.items()} if chars else inputs[[1, 2]],
                                           tags[[1, 2]])
    assert float(none_loss) == 0.0 and float(none_count) == 0.0
    for jit in (False, True):
        got = tf.function(lambda x, y: model.loss_sum(x, y), jit_compile=jit)(inputs, tags)
        assert float(got[0]) == pytest.approx(float(loss), rel=1e-6) and float(got[1]) == float(count)


def test_classifier_loss_leaves_out_documents_with_an_unseen_label():
    model = _classifier()
    rng = np.random.default_rng(2)
    ids = rng.integers(1, VOCAB, (6, 5)).astype(np.int32)
    labels = np.array([0, 3, 2, 1, 7, 2], np.int32)  # 3 and 7: unseen
    loss, count = model.loss_sum(ids, labels)
    assert np.isfinite(float(loss)) and float(count) == 4
    keep = [0, 2, 3, 5]
    want_loss, want_count = model.loss_sum(ids[keep], labels[keep])
    assert float(want_count) == 4 and float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    logp = _log_softmax(model(ids))
    assert float(loss) == pytest.approx(-sum(logp[i, labels[i]] for i in keep), rel=1e-5)
    for jit in (False, True):
        got = tf.function(lambda x, y: model.loss_sum(x, y), jit_compile=jit)(ids, labels)
        assert float(got[0]) == pytest.approx(float(loss), rel=1e-6) and float(got[1]) == 4


# ------------------------------------------------------------------------------ TaggingEvaluator
def _tagging_examples(with_chars=False):
    rng = np.random.default_rng(4)
    ids = [rng.integers(1, VOCAB, n).astype(np.int32) for n in LENGTHS]
    tags = [rng.integers(0, N, n).astype(np.int32) for n in LENGTHS]
    chars = None
    if with_chars:
        chars = [[rng.integers(1, CHAR_VOCAB, rng.integers(1, 7)).astype(np.int32) for _ in x] for x in ids]
    return Examples(task="tagging", ids=ids, tags=tags, chars=chars)


def _predicted_ids(model, ex, max_chars=None):
    """The model's tag ids per sentence (corpus order), read through the evaluator itself."""
    _, pred, _ = TaggingEvaluator(ex, TAG_NAMES, batch_size=4, max_chars=max_chars).predict(model)
    return [np.array([TAG_NAMES.index(p) for p in row], np.int32) for row in pred]


UNSEEN_TAGS = ["B-NEW", "I-NEW"]
# (sentence, token) → unseen id; sentence 2 gets a whole NEW span, sentences 0 and 5 one token each
UNSEEN_AT = {(2, 3): N, (2, 4): N + 1, (0, 0): N, (5, 5): N + 1}


def _with_unseen(ex, pred_ids):
    tags = [p.copy() for p in pred_ids]
    for (i, t), v in UNSEEN_AT.items():
        tags[i][t] = v
    return Examples(task="tagging", ids=ex.ids, tags=tags, chars=ex.chars)


@pytest.mark.parametrize("crf", [False, True])
def test_tagging_evaluator_counts_unseen_tokens_as_wrong(crf):
    base = _tagging_examples(with_chars=crf)
    model = _tagger(crf=crf, chars=crf)
    max_chars = MAX_CHARS if crf else None
    pred_ids = _predicted_ids(model, base, max_chars)
    ex = _with_unseen(base, pred_ids)  # gold = predictions, but for the unseen tokens
    evaluator = TaggingEvaluator(ex, TAG_NAMES, scheme="bio", batch_size=3, max_chars=max_chars,
                                 unseen_names=UNSEEN_TAGS)
    gold, pred, total = evaluator.predict(model)
    assert gold[2][3:5] == ["B-NEW", "I-NEW"] and gold[0][0] == "B-NEW" and gold[5][5] == "I-NEW"
    assert [[TAG_NAMES.index(p) for p in row] for row in pred] == [p.tolist() for p in pred_ids]

    scores = evaluator(model)
    tokens, unseen = sum(LENGTHS), len(UNSEEN_AT)
    assert scores["tokens"] == tokens
    assert scores["unseen"] == unseen
    assert scores["accuracy"] == (tokens - unseen) / tokens
    assert evaluator.last_report["unseen"] == {"B-NEW": 2, "I-NEW": 2}

    # the loss: over the scored tokens only, by hand, sentence by sentence
    want_total = want_count = 0.0
    for k, (ids, tags) in enumerate(zip(ex.ids, ex.tags)):
        inputs = ids[None]
        if crf:
            chars = np.zeros((1, len(ids), MAX_CHARS), np.int32)
            for j, word in enumerate(ex.chars[k]):
                chars[0, j, : min(len(word), MAX_CHARS)] = word[:MAX_CHARS]
            inputs = {"ids": ids[None], "chars": chars}
            if (tags >= N).any():
                continue  # the whole sentence is left out
            want_total += float(model.loss_sum(inputs, tags[None])[0])
            want_count += len(ids)
        else:
            logp = _log_softmax(model(inputs))[0]
            known = tags < N
            want_total -= logp[np.arange(len(ids))[known], tags[known]].sum()
            want_count += known.sum()
    assert want_count == (tokens - (5 + 8 + 6) if crf else tokens - unseen)
    assert total == pytest.approx(want_total, rel=1e-5)
    assert scores["loss"] == pytest.approx(want_total / want_count, rel=1e-5)

    # spans: gold strings with the unseen names; the NEW span is a false negative
    spans = span_scores(gold, pred, "bio")
    assert (scores["precision"], scores["recall"], scores["f1"]) == (spans["precision"], spans["recall"], spans["f1"])
    assert scores["recall"] < 1.0
    new = evaluator.last_report["per_type"]["NEW"]
    assert new["support"] >= 1 and new["recall"] == 0.0


def test_tagging_evaluator_without_unseen_tags_is_unchanged():
    ex = _tagging_examples()
    model = _tagger()
    evaluator = TaggingEvaluator(ex, TAG_NAMES, scheme="bio", batch_size=3)
    scores = evaluator(model)
    assert set(scores) == {"loss", "accuracy", "tokens", "precision", "recall", "f1"}
    assert set(evaluator.last_report) == {"per_type"}
    # the values of before: summed loss over every token / tokens, accuracy over every token
    gold, pred, total = evaluator.predict(model)
    tokens = sum(LENGTHS)
    assert scores["loss"] == total / tokens
    assert scores["accuracy"] == sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / tokens
    spans = span_scores(gold, pred, "bio")
    assert (scores["precision"], scores["recall"], scores["f1"]) == (spans["precision"], spans["recall"], spans["f1"])
    # unseen names that this split does not use: the same values, plus unseen = 0
    named = TaggingEvaluator(ex, TAG_NAMES, scheme="bio", batch_size=3, unseen_names=UNSEEN_TAGS)
    with_names = named(model)
    assert with_names.pop("unseen") == 0 and with_names == scores
    assert named.last_report["unseen"] == {"B-NEW": 0, "I-NEW": 0}


def test_tagging_evaluator_rejects_ids_beyond_the_unseen_names():
    ex = _tagging_examples()
    ex.tags[4] = ex.tags[4].copy()
    ex.tags[4][1] = N + 2
    with pytest.raises(ValueError, match=r"sentence 4: gold tag id 5 is out of range"):
        TaggingEvaluator(ex, TAG_NAMES, unseen_names=UNSEEN_TAGS)
    with pytest.raises(ValueError, match=r"gold tag id 5 is out of range"):
        TaggingEvaluator(ex, TAG_NAMES)
    ex.tags[4][1] = N  # in range once it has a name
    TaggingEvaluator(ex, TAG_NAMES, unseen_names=["B-NEW"])
    with pytest.raises(ValueError, match=r"gold tag id 3"):
        TaggingEvaluator(ex, TAG_NAMES)
    with pytest.raises(ValueError, match="also known"):
        TaggingEvaluator(ex, TAG_NAMES, unseen_names=["O"])


# ------------------------------------------------------------------------ ClassificationEvaluator
class FixedLogits(keras.Model):
    """Logits looked up from the first token id: a classifier whose every answer is known."""

    def __init__(self, table):
        super().__init__()
        self.table = np.asarray(table, np.float32)

    def call(self, ids, training=None):
        return ops.take(ops.convert_to_tensor(self.table), ids[:, 0], axis=0)


TABLE = [[0, 0, 0], [2, 0, 0], [0, 3, 0], [0, 0, 1], [0.5, 0, -1]]  # id → logits; ids 1, 4 → class 0
LABELS = ["neg", "neu", "pos"]
FIRST = [1, 4, 2, 2, 3, 3, 3, 1, 2, 3]  # predictions: 0 0 1 1 2 2 2 0 1 2
DOC_LENGTHS = [5, 2, 7, 1, 3, 6, 2, 4, 3, 5]


def _docs(gold):
    ids = [np.array([f] + [9] * (n - 1), np.int32) for f, n in zip(FIRST, DOC_LENGTHS)]
    return Examples(task="classification", ids=ids, labels=np.array(gold, np.int32))


def test_classification_evaluator_counts_unseen_documents_as_wrong():
    # gold = predictions, but documents 2, 5, 9 have unseen labels (3 = "spam", 4 = "other")
    gold = [0, 0, 3, 1, 2, 4, 2, 0, 1, 3]
    evaluator = ClassificationEvaluator(_docs(gold), LABELS, batch_size=3, unseen_names=["spam", "other"])
    model = FixedLogits(TABLE)
    pred, total = evaluator.predict(model)
    np.testing.assert_array_equal(pred, [0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    logp = _log_softmax(TABLE)
    known = [i for i, g in enumerate(gold) if g < 3]
    want_total = -sum(logp[FIRST[i], gold[i]] for i in known)
    assert total == pytest.approx(want_total, rel=1e-6)

    scores = evaluator(model)
    assert scores["examples"] == 10 and scores["unseen"] == 3
    assert scores["accuracy"] == 7 / 10
    assert scores["loss"] == pytest.approx(want_total / 7, rel=1e-6)
    # per class over known + unseen: neg P=R=1, neu P=2/3 R=1 (F1 0.8), pos P=2/4 R=1 (F1 2/3),
    # spam and other: support 2 and 1, recall 0, F1 0
    assert scores["macro_f1"] == pytest.approx((1 + 0.8 + 2 / 3 + 0 + 0) / 5)
    assert evaluator.confusion_labels == ["neg", "neu", "pos", "spam", "other"]
    np.testing.assert_array_equal(evaluator.confusion, [[3, 0, 0, 0, 0],
                                                        [0, 2, 0, 0, 0],
                                                        [0, 0, 2, 0, 0],
                                                        [0, 1, 1, 0, 0],  # spam: gold rows ...
                                                        [0, 0, 1, 0, 0]])  # ... never a prediction column
    report = evaluator.last_report
    assert report["spam"]["support"] == 2 and report["spam"]["recall"] == 0.0
    assert report["other"]["support"] == 1 and report["other"]["f1-score"] == 0.0
    assert report["pos"]["precision"] == pytest.approx(0.5)
    assert report["unseen"] == {"spam": 2, "other": 1}


def test_classification_evaluator_without_unseen_labels_is_unchanged():
    gold = [0, 0, 0, 1, 1, 2, 2, 2, 1, 0]
    ex = _docs(gold)
    model = FixedLogits(TABLE)
    evaluator = ClassificationEvaluator(ex, LABELS, batch_size=3)
    scores = evaluator(model)
    assert set(scores) == {"loss", "accuracy", "macro_f1", "examples"}
    assert evaluator.confusion.shape == (3, 3) and "unseen" not in evaluator.last_report
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    assert scores["accuracy"] == float(np.mean(np.array(gold) == pred))
    # the summed loss: exactly the old batch formula, batch by batch
    old = tf.function(lambda ids, label: tf.reduce_sum(tf.cast(keras.losses.sparse_categorical_crossentropy(
        label, model(ids, training=False), from_logits=True), tf.float64)))
    want = 0.0
    for _, batch in eval_batches(ex, 3):
        want += float(old(tf.constant(batch["ids"]), tf.constant(batch["label"])))
    assert evaluator.predict(model)[1] == want
    assert scores["loss"] == want / 10
    # unseen names that this split does not use: the same values (and matrix over the known
    # labels' rows), plus unseen = 0
    named = ClassificationEvaluator(ex, LABELS, batch_size=3, unseen_names=["spam"])
    with_names = named(model)
    assert with_names.pop("unseen") == 0
    assert with_names["loss"] == scores["loss"] and with_names["accuracy"] == scores["accuracy"]
    np.testing.assert_array_equal(named.confusion[:3, :3], evaluator.confusion)
    assert named.last_report["unseen"] == {"spam": 0}


def test_classification_evaluator_rejects_ids_beyond_the_unseen_names():
    with pytest.raises(ValueError, match=r"gold label id 5 is out of range"):
        ClassificationEvaluator(_docs([0, 0, 5, 1, 2, 4, 2, 0, 1, 3]), LABELS, unseen_names=["spam", "other"])
    with pytest.raises(ValueError, match=r"gold label id 3 is out of range"):
        ClassificationEvaluator(_docs([0, 0, 3, 1, 2, 0, 2, 0, 1, 0]), LABELS)
    with pytest.raises(ValueError, match=r"gold label id -1"):
        ClassificationEvaluator(_docs([0, 0, -1, 1, 2, 0, 2, 0, 1, 0]), LABELS)
    with pytest.raises(ValueError, match="also known"):
        ClassificationEvaluator(_docs([0] * 10), LABELS, unseen_names=["neg"])
