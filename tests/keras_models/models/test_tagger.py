"""RNNTagger: padding invariance, the masked loss against NumPy, character features, CRF, saving, a fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.models.tagger import RNNTagger
from requires import fit_loss_sum, saved_and_loaded

VOCAB, TAGS, CHARS, T, C = 11, 4, 7, 5, 4
LENGTHS = [5, 3, 1, 4]


def _batch(seed=0, extra_words=0, extra_chars=0, extra_rows=0):
    """Right-padded ids [B, T], chars [B, T, C] and tags; padding tags are junk (-1 / big)."""
    rng = np.random.default_rng(seed)
    rows = len(LENGTHS) + extra_rows
    ids = np.zeros((rows, T + extra_words), "int32")
    chars = np.zeros((rows, T + extra_words, C + extra_chars), "int32")
    tags = np.full((rows, T + extra_words), -1, "int32")
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = rng.integers(1, VOCAB, size=n)
        tags[b, :n] = rng.integers(0, TAGS, size=n)
        for t in range(n):
            width = rng.integers(1, C + 1)
            chars[b, t, :width] = rng.integers(1, CHARS, size=width)
    return ids, chars, tags


def _model(**kw):
    args = dict(embedding_dim=4, hidden_dim=4, seed=5)
    args.update(kw)
    return RNNTagger(VOCAB, TAGS, **args)


def _real(x, lengths=LENGTHS):
    return [np.asarray(x)[b, :n] for b, n in enumerate(lengths)]


def _randomize_crf(model, seed=7):
    rng = np.random.default_rng(seed)
    crf = model.crf
    for w in (crf.transitions, crf.start_transitions, crf.end_transitions):
        w.assign(rng.normal(scale=2.0, size=w.shape).astype("float32"))


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("rnn", 1)])
def test_padding_changes_nothing_and_loss_is_masked_cross_entropy(cell, layers):
    model = _model(cell=cell, num_layers=layers)
    ids, _, tags = _batch()
    logits = np.asarray(model(ids))
    assert logits.shape == (len(LENGTHS), T, TAGS) and logits.dtype == np.float32
    loss, count = model.loss_sum(ids, tags)

    # NumPy: cross-entropy of the real tokens only.
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mask = ids != 0
    expected = -sum(log_probs[b, t, tags[b, t]] for b, t in zip(*np.nonzero(mask)))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(count) == sum(LENGTHS)

    # Extra padding steps and an all-padding row: same logits at real steps, same loss and count.
    ids2, _, tags2 = _batch(extra_words=3, extra_rows=1)
    logits2 = model(ids2)
    for a, b in zip(_real(logits2), _real(logits)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    loss2, count2 = model.loss_sum(ids2, tags2)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-5)
    assert float(count2) == float(count)

    predicted = np.asarray(model.predict_tags(ids2))
    assert predicted.dtype == np.int32
    assert (predicted[ids2 == 0] == 0).all()
    for a, b in zip(_real(predicted), _real(logits.argmax(-1))):
        np.testing.assert_array_equal(a, b)


def test_character_features():
    model = _model(cell="gru", char_vocab_size=CHARS, char_embedding_dim=3, char_hidden_dim=2)
    ids, chars, tags = _batch(seed=1)
    logits = np.asarray(model({"ids": ids, "chars": chars}))

    # Other characters for one word change the logits (here at every step: the encoder is bidirectional).
    other = chars.copy()
    other[0, 2, 0] = other[0, 2, 0] % (CHARS - 1) + 1
    changed = np.asarray(model({"ids": ids, "chars": other}))
    assert not np.allclose(changed[0], logits[0], atol=1e-6)
    np.testing.assert_allclose(changed[1:], logits[1:], rtol=1e-5, atol=1e-6)  # other rows untouched

    # Padding words, padding characters and an all-padding row change nothing at the real steps.
    ids2, chars2, tags2 = _batch(seed=1, extra_words=2, extra_chars=3, extra_rows=1)
    logits2 = model({"ids": ids2, "chars": chars2})
    for a, b in zip(_real(logits2), _real(logits)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        float(model.loss_sum({"ids": ids2, "chars": chars2}, tags2)[0]),
        float(model.loss_sum({"ids": ids, "chars": chars}, tags)[0]),
        rtol=1e-5,
    )

    with pytest.raises(ValueError, match="chars"):
        model(ids)
    with pytest.raises(ValueError, match="char_vocab_size=0"):
        _model()({"ids": ids, "chars": chars})


def test_save_load_mixed_precision_and_config(tmp_path):
    model = _model(char_vocab_size=CHARS, char_embedding_dim=3, char_hidden_dim=2, dropout=0.2,
                   recurrent_dropout=0.1)
    ids, chars, _ = _batch(seed=2)
    inputs = {"ids": ids, "chars": chars}
    logits = np.asarray(model(inputs))
    loaded = saved_and_loaded(model, tmp_path / "tagger.keras", inputs, logits)
    config = loaded.get_config()
    for key in ("vocab_size", "num_tags", "cell", "num_layers", "embedding_dim", "hidden_dim", "dropout",
                "recurrent_dropout", "activation", "char_vocab_size", "char_embedding_dim",
                "char_hidden_dim", "use_crf", "seed"):
        assert config[key] == model.get_config()[key], key
    assert not np.allclose(np.asarray(model(inputs, training=True)), logits)  # dropout on in training

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        half = _model(char_vocab_size=CHARS, char_embedding_dim=3, char_hidden_dim=2)
        out = half(inputs)
        assert out.dtype == tf.float32
        assert np.isfinite(np.asarray(half.loss_sum(inputs, np.ones_like(ids))[0]))
    finally:
        keras.config.set_dtype_policy(policy)


def test_crf_loss_decode_and_saving(tmp_path):
    pytest.importorskip("keras_models.layers.crf")
    model = _model(cell="lstm", use_crf=True)
    ids, _, tags = _batch(seed=3)
    ids2, _, tags2 = _batch(seed=3, extra_words=2, extra_rows=1)
    model(ids)
    _randomize_crf(model)
    logits = model(ids)
    mask = ids != 0

    loss, count = model.loss_sum(ids, tags)
    expected = -np.sum(np.asarray(model.crf.log_likelihood(logits, np.where(mask, tags, 0), mask)))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(count) == sum(LENGTHS)
    np.testing.assert_allclose(float(model.loss_sum(ids2, tags2)[0]), float(loss), rtol=1e-5)

    decoded, _ = model.crf.decode(logits, mask)
    predicted = np.asarray(model.predict_tags(ids))
    np.testing.assert_array_equal(predicted, np.where(mask, np.asarray(decoded), 0))
    assert (predicted != np.where(mask, np.asarray(logits).argmax(-1), 0)).any()  # not just argmax
    assert (np.asarray(model.predict_tags(ids2))[ids2 == 0] == 0).all()

    path = tmp_path / "crf_tagger.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded.crf.transitions), np.asarray(model.crf.transitions))
    np.testing.assert_array_equal(np.asarray(loaded.predict_tags(ids)), predicted)
    np.testing.assert_allclose(float(loaded.loss_sum(ids, tags)[0]), float(loss), rtol=1e-5)


@pytest.mark.parametrize("use_crf", [False, True])
def test_fit_learns_id_parity(use_crf):
    if use_crf:
        pytest.importorskip("keras_models.layers.crf")
    rng = np.random.default_rng(0)
    ids = np.zeros((32, 6), "int32")
    for b, n in enumerate(rng.integers(2, 7, size=32)):
        ids[b, :n] = rng.integers(1, VOCAB, size=n)
    tags = np.where(ids != 0, ids % 2, 0).astype("int32")
    model = RNNTagger(VOCAB, 2, cell="gru", embedding_dim=8, hidden_dim=8, use_crf=use_crf, seed=0)
    optimizer = keras.optimizers.Adam(0.05)
    model(ids)
    first, last = fit_loss_sum(model, optimizer, ids, tags, steps=40)
    print(f"use_crf={use_crf}: mean loss {first:.3f} -> {last:.3f}")
    assert last < 0.2 * first, (first, last)
    accuracy = (np.asarray(model.predict_tags(ids)) == tags)[ids != 0].mean()
    assert accuracy > 0.95
