"""Attention: the three scores against NumPy with padding masked, prepared keys, all-padding rows, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.layers.attention import Attention

B, S, DQ, DK, UNITS = 3, 5, 4, 6, 7
LENGTHS = [5, 2, 0]  # the last row is all padding


def _inputs(dq=DQ, dk=DK, seed=0):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(B, dq)).astype("float32")
    keys = rng.normal(size=(B, S, dk)).astype("float32")
    mask = np.arange(S)[None, :] < np.array(LENGTHS)[:, None]
    return query, keys, mask


def _numpy_attention(layer, query, keys, mask):
    """Scores from the textbook formulas, then a softmax over the real positions only."""
    if layer.score == "dot":
        scores = np.einsum("bd,bsd->bs", query, keys)
    elif layer.score == "bilinear":
        w = np.asarray(layer.kernel)
        scores = np.einsum("bq,qk,bsk->bs", query, w, keys)
    else:
        wq, bq = np.asarray(layer.query_kernel), np.asarray(layer.query_bias)
        wk, v = np.asarray(layer.key_kernel), np.asarray(layer.score_vector)
        # v . tanh(W [q; k] + b) with W = [W_q; W_k] stacked on the input axis.
        w = np.concatenate([wq, wk], axis=0)
        qk = np.concatenate([np.repeat(query[:, None], S, axis=1), keys], axis=-1)
        scores = np.tanh(qk @ w + bq) @ v
    weights = np.zeros_like(scores)
    for b in range(B):
        real = mask[b]
        if real.any():
            e = np.exp(scores[b, real] - scores[b, real].max())
            weights[b, real] = e / e.sum()
    return np.einsum("bs,bsk->bk", weights, keys), weights


def _layer(score, query, keys):
    layer = Attention(score, units=UNITS if score == "additive" else None)
    layer.build(query.shape, keys.shape)
    if score == "additive":  # a non-zero bias, so that it is tested too
        layer.query_bias.assign(np.random.default_rng(1).normal(size=UNITS).astype("float32"))
    return layer


@pytest.mark.parametrize("score", ["dot", "bilinear", "additive"])
def test_scores_against_numpy_with_padding(score):
    dq = DK if score == "dot" else DQ
    query, keys, mask = _inputs(dq=dq)
    layer = _layer(score, query, keys)
    context, weights = layer(query, keys, mask=mask)
    assert context.dtype == tf.float32 and weights.dtype == tf.float32
    context, weights = np.asarray(context), np.asarray(weights)
    expected_context, expected_weights = _numpy_attention(layer, query, keys, mask)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context, expected_context, rtol=1e-5, atol=1e-6)

    assert (weights[~mask] == 0).all()  # exactly 0 at padding
    np.testing.assert_allclose(weights[:2].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(context, np.einsum("bs,bsk->bk", weights, keys), rtol=1e-5, atol=1e-6)
    assert np.isfinite(context).all() and np.isfinite(weights).all()
    assert (weights[2] == 0).all() and (context[2] == 0).all()  # all-padding row: zeros, no NaN

    # Prepared keys (computed once) give the same result.
    prepared = layer.prepare_keys(keys)
    context2, weights2 = layer(query, keys, mask=mask, prepared=prepared)
    np.testing.assert_allclose(np.asarray(weights2), weights, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(context2), context, rtol=1e-6, atol=1e-7)

    # Values at padded positions are never read; no mask = all positions real.
    junk = keys.copy()
    junk[~mask] = 1e4
    np.testing.assert_allclose(np.asarray(layer(query, junk, mask=mask)[0]), context, rtol=1e-5, atol=1e-6)
    full = np.ones_like(mask)
    np.testing.assert_allclose(
        np.asarray(layer(query, keys)[1]), np.asarray(layer(query, keys, mask=full)[1]), rtol=1e-6
    )

    # Config round trip (weights copied) gives the same function.
    clone = Attention.from_config(layer.get_config())
    clone.build(query.shape, keys.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(query, keys, mask=mask)[1]), weights, rtol=1e-6)


def test_errors_and_lazy_build():
    query, keys, mask = _inputs()
    with pytest.raises(ValueError, match="same size"):
        Attention("dot")(query, keys, mask=mask)  # Dq = 4, Dk = 6
    with pytest.raises(ValueError, match="score must be"):
        Attention("general")
    with pytest.raises(ValueError, match="units"):
        Attention("dot", units=3)
    with pytest.raises(ValueError, match="built"):
        Attention("bilinear").prepare_keys(keys)
    layer = Attention("additive")  # built on the first call; units default to the query size
    layer(query, keys, mask=mask)
    assert tuple(layer.key_kernel.shape) == (DK, DQ)


def test_mixed_precision_weights_in_float32():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        query, keys, mask = _inputs()
        layer = Attention("bilinear")
        context, weights = layer(query * 100, keys, mask=mask)  # large scores: softmax in float32
        assert context.dtype == tf.float16 and weights.dtype == tf.float32
        weights = np.asarray(weights)
        assert np.isfinite(weights).all() and (weights[~mask] == 0).all() and (weights[2] == 0).all()
        np.testing.assert_allclose(weights[:2].sum(-1), 1.0, rtol=1e-6)
    finally:
        keras.config.set_dtype_policy(policy)
