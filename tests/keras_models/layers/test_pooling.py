"""Masked pooling against NumPy on right-padded batches; padding never wins, empty rows give zeros."""

import numpy as np
import pytest
import tensorflow as tf

from keras_models.layers.pooling import bidirectional_last, masked_pooling

B, T, D, U = 5, 6, 3, 2
LENGTHS = np.array([6, 3, 1, 4, 0])  # full, partial, length 1, partial, all padding


def _batch(seed=0, shift=0.0, dim=D):
    x = np.random.default_rng(seed).normal(size=(B, T, dim)).astype("float32") + shift
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    # Padding steps get large values, so that any leak of padding shows.
    x = np.where(mask[..., None], x, 100.0).astype("float32")
    return x, mask


def _np_pool(x, mask, mode):
    out = np.zeros((x.shape[0], x.shape[2]), "float32")
    for b, length in enumerate(mask.sum(1)):
        real = x[b, :length]
        if length == 0:
            continue
        out[b] = {"last": real[-1], "mean": real.mean(0), "max": real.max(0)}[mode]
    return out


@pytest.mark.parametrize("mode", ["last", "mean", "max"])
@pytest.mark.parametrize("shift", [0.0, -50.0])  # -50: every real value is negative
def test_masked_pooling_matches_numpy(mode, shift):
    x, mask = _batch(shift=shift)
    got = np.asarray(masked_pooling(x, mask, mode))
    np.testing.assert_allclose(got, _np_pool(x, mask, mode), rtol=1e-6, atol=1e-6)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[LENGTHS == 0], 0.0)


@pytest.mark.parametrize("mode", ["last", "mean", "max"])
def test_masked_pooling_float16_and_xla(mode):
    x, mask = _batch(shift=-5.0)
    x16 = x.astype("float16")
    got16 = masked_pooling(x16, mask, mode)
    assert got16.dtype == tf.float16
    np.testing.assert_allclose(
        np.asarray(got16, "float32"), _np_pool(x16.astype("float32"), mask, mode), rtol=2e-3, atol=2e-3
    )
    xla = tf.function(lambda a, m: masked_pooling(a, m, mode), jit_compile=True)
    np.testing.assert_allclose(np.asarray(xla(x, mask)), _np_pool(x, mask, mode), rtol=1e-6, atol=1e-6)


def test_mask_none_means_all_real_and_bad_mode():
    x, _ = _batch()
    np.testing.assert_allclose(np.asarray(masked_pooling(x, None, "mean")), x.mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="pooling mode"):
        masked_pooling(x, None, "sum")


def test_bidirectional_last_matches_numpy():
    x, mask = _batch(seed=3, dim=2 * U)
    expected = np.zeros((B, 2 * U), "float32")
    for b, length in enumerate(LENGTHS):
        if length:
            expected[b] = np.concatenate([x[b, length - 1, :U], x[b, 0, U:]])
    got = np.asarray(bidirectional_last(x, mask, U))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    xla = tf.function(lambda a, m: bidirectional_last(a, m, U), jit_compile=True)
    np.testing.assert_allclose(np.asarray(xla(x, mask)), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="two directions"):
        bidirectional_last(x, mask, U + 1)
