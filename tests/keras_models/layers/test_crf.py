"""CRF against brute-force enumeration of all tag sequences, under XLA and MirroredStrategy."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.layers.crf import (
    CRF,
    crf_log_likelihood,
    crf_log_norm,
    crf_sequence_score,
    viterbi_decode,
)

N, T = 3, 4
LENGTHS = (4, 2, 1, 0)  # full, padded, length 1, fully padded
B = len(LENGTHS)
ATOL = 1e-5


def _mask(lengths=LENGTHS, time=T):
    return np.arange(time)[None, :] < np.asarray(lengths)[:, None]


def _data(seed=0, lengths=LENGTHS, time=T):
    """Random potentials, tags, mask and weights `(transitions, start, end)`, float32."""
    rng = np.random.default_rng(seed)
    potentials = rng.normal(size=(len(lengths), time, N)).astype("float32")
    tags = rng.integers(0, N, size=(len(lengths), time)).astype("int32")
    weights = (
        rng.normal(size=(N, N)).astype("float32"),
        rng.normal(size=(N,)).astype("float32"),
        rng.normal(size=(N,)).astype("float32"),
    )
    return potentials, tags, _mask(lengths, time), weights


# -- brute force, float64 -------------------------------------------------------------------------
def np_score(pot, path, trans, start, end):
    """Score of one path (its length is the sequence length) under one sequence's potentials."""
    if len(path) == 0:
        return 0.0
    s = start[path[0]] + end[path[-1]] + sum(pot[t, y] for t, y in enumerate(path))
    return s + sum(trans[a, b] for a, b in zip(path[:-1], path[1:]))


def np_paths(length):
    return list(itertools.product(range(N), repeat=length))


def np_log_norm(pot, length, trans, start, end):
    if length == 0:
        return 0.0
    scores = np.array([np_score(pot, p, trans, start, end) for p in np_paths(length)])
    return float(np.logaddexp.reduce(scores))


def np_viterbi(pot, length, trans, start, end):
    paths = np_paths(length)
    scores = [np_score(pot, p, trans, start, end) for p in paths]
    best = int(np.argmax(scores))
    return list(paths[best]), float(scores[best])


def _f64(*arrays):
    return [np.asarray(a, "float64") for a in arrays]


def _layer(weights, **kwargs):
    crf = CRF(N, **kwargs)
    crf.build((None, None, N))
    crf.set_weights(list(weights))
    return crf


# -- the pure functions against brute force -------------------------------------------------------
def test_log_likelihood_and_log_norm_match_brute_force():
    potentials, tags, mask, weights = _data()
    score = np.asarray(crf_sequence_score(potentials, tags, mask, *weights))
    log_z = np.asarray(crf_log_norm(potentials, mask, *weights))
    ll = np.asarray(crf_log_likelihood(potentials, tags, mask, *weights))
    assert score.dtype == log_z.dtype == ll.dtype == np.float32
    trans, start, end = _f64(*weights)
    for b, length in enumerate(LENGTHS):
        pot = potentials[b].astype("float64")
        want_score = np_score(pot, tags[b, :length], trans, start, end)
        want_log_z = np_log_norm(pot, length, trans, start, end)
        np.testing.assert_allclose(score[b], want_score, atol=ATOL)
        np.testing.assert_allclose(log_z[b], want_log_z, atol=ATOL)
        np.testing.assert_allclose(ll[b], want_score - want_log_z, atol=ATOL)
    assert ll[LENGTHS.index(0)] == 0.0 and log_z[LENGTHS.index(0)] == 0.0


def test_probabilities_sum_to_one():
    potentials, _, _, weights = _data(seed=1)
    rng = np.random.default_rng(2)
    for b, length in enumerate(LENGTHS):
        paths = np_paths(length)  # length 0: the one empty path
        tags = rng.integers(0, N, size=(len(paths), T)).astype("int32")  # random padding tags
        tags[:, :length] = np.array(paths, "int32").reshape(len(paths), length)
        pot = np.repeat(potentials[b : b + 1], len(paths), axis=0)
        mask = _mask([length] * len(paths))
        ll = np.asarray(crf_log_likelihood(pot, tags, mask, *weights), "float64")
        assert np.all(ll <= 1e-6)
        np.testing.assert_allclose(np.exp(ll).sum(), 1.0, atol=1e-5)


def test_viterbi_matches_brute_force():
    for seed in range(3):
        potentials, _, mask, weights = _data(seed=seed)
        tags, scores = viterbi_decode(potentials, mask, *weights)
        assert tags.dtype == tf.int32 and scores.dtype == tf.float32
        tags, scores = np.asarray(tags), np.asarray(scores)
        trans, start, end = _f64(*weights)
        for b, length in enumerate(LENGTHS):
            want_path, want_score = np_viterbi(
                potentials[b].astype("float64"), length, trans, start, end
            )
            assert tags[b, :length].tolist() == want_path
            assert (tags[b, length:] == 0).all()
            np.testing.assert_allclose(scores[b], want_score, atol=ATOL)
        # The decoded score is the sequence score of the decoded tags.
        np.testing.assert_allclose(
            scores, crf_sequence_score(potentials, tags, mask, *weights), atol=ATOL
        )


def test_mask_none_means_all_steps():
    potentials, tags, _, weights = _data(seed=3)
    full = np.ones((B, T), bool)
    np.testing.assert_allclose(
        crf_log_likelihood(potentials, tags, None, *weights),
        crf_log_likelihood(potentials, tags, full, *weights),
        atol=ATOL,
    )
    decoded = viterbi_decode(potentials, None, *weights)
    for got, want in zip(decoded, viterbi_decode(potentials, full, *weights)):
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_padding_never_changes_the_result():
    potentials, tags, mask, weights = _data(seed=4)
    rng = np.random.default_rng(5)
    extra = 3
    # More padded steps, and different values at the padded steps already there.
    pot_pad = rng.normal(size=(B, T + extra, N)).astype("float32")
    tags_pad = rng.integers(0, N, size=(B, T + extra)).astype("int32")
    mask_pad = _mask(LENGTHS, T + extra)
    pot_pad[mask_pad] = potentials[mask]
    tags_pad[mask_pad] = tags[mask]

    ll = crf_log_likelihood(potentials, tags, mask, *weights)
    ll_pad = crf_log_likelihood(pot_pad, tags_pad, mask_pad, *weights)
    np.testing.assert_allclose(ll_pad, ll, atol=ATOL)
    best, score = viterbi_decode(potentials, mask, *weights)
    best_pad, score_pad = viterbi_decode(pot_pad, mask_pad, *weights)
    np.testing.assert_array_equal(np.asarray(best_pad)[:, :T], best)
    assert (np.asarray(best_pad)[:, T:] == 0).all()
    np.testing.assert_allclose(score_pad, score, atol=ATOL)


# -- the layer -----------------------------------------------------------------------------------
def _loss_and_grads(crf, potentials, tags, mask):
    potentials = tf.convert_to_tensor(potentials)
    with tf.GradientTape() as tape:
        tape.watch(potentials)
        ll = crf.log_likelihood(potentials, tags, mask)
        loss = -tf.reduce_sum(ll)
    grads = tape.gradient(loss, [potentials, *crf.trainable_variables])
    return ll, grads


def test_gradients_finite_and_jit_matches_eager():
    potentials, tags, mask, weights = _data(seed=6)
    crf = _layer(weights)
    assert [v.path.split("/")[-1] for v in crf.trainable_variables] == [
        "transitions",
        "start_transitions",
        "end_transitions",
    ]
    ll, grads = _loss_and_grads(crf, potentials, tags, mask)
    assert len(grads) == 4
    for g in grads:
        assert g is not None and np.isfinite(np.asarray(g)).all()
        assert np.abs(np.asarray(g)).sum() > 0
    # d(-ll)/d(potentials) is marginals - one_hot(gold): zero at padded steps, rows sum to 0.
    g_pot = np.asarray(grads[0])
    assert (g_pot[~mask] == 0).all()
    np.testing.assert_allclose(g_pot.sum(-1), 0.0, atol=ATOL)

    @tf.function(jit_compile=True)
    def compiled(potentials, tags, mask):
        ll, grads = _loss_and_grads(crf, potentials, tags, mask)
        return ll, grads, crf.decode(potentials, mask)

    ll_x, grads_x, (best_x, score_x) = compiled(potentials, tags, mask)
    np.testing.assert_allclose(ll_x, ll, atol=ATOL)
    for gx, g in zip(grads_x, grads):
        np.testing.assert_allclose(gx, g, atol=ATOL)
    best, score = crf.decode(potentials, mask)
    np.testing.assert_array_equal(best_x, best)
    np.testing.assert_allclose(score_x, score, atol=ATOL)


def test_call_decodes_and_takes_the_keras_mask():
    potentials, _, mask, weights = _data(seed=7)
    crf = _layer(weights)
    best, _ = crf.decode(potentials, mask)
    np.testing.assert_array_equal(crf(potentials, mask=mask), best)
    # A functional tagger: the mask comes from Embedding(mask_zero=True).
    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(7, 4, mask_zero=True)(ids)
    out = CRF(N)(keras.layers.Dense(N)(x))
    assert out.dtype == "int32" and tuple(out.shape) == (None, None)
    model = keras.Model(ids, out)
    batch = np.array([[1, 2, 3, 0], [4, 0, 0, 0]], "int32")
    tags = np.asarray(model(batch))
    assert tags.shape == (2, 4) and (tags[batch == 0] == 0).all()


def test_config_round_trip():
    _, _, _, weights = _data(seed=8)
    crf = _layer(weights, name="tagger_crf")
    config = crf.get_config()
    assert config["num_tags"] == N and config["name"] == "tagger_crf"
    clone = CRF.from_config(config)
    assert clone.num_tags == N and clone.name == "tagger_crf"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(crf))
    assert type(restored) is CRF and restored.get_config() == config
    potentials, _, mask, _ = _data(seed=9)
    assert restored.built  # from the serialized build config
    restored.set_weights(crf.get_weights())
    for got, want in zip(restored.decode(potentials, mask), crf.decode(potentials, mask)):
        np.testing.assert_allclose(got, want)


def test_initial_weights_and_validation():
    crf = CRF(N)
    crf.build((2, T, N))
    assert all(v.dtype == "float32" for v in crf.weights)
    assert all(np.all(np.asarray(v) == 0) for v in crf.weights)
    assert [tuple(v.shape) for v in crf.weights] == [(N, N), (N,), (N,)]
    with pytest.raises(ValueError, match="num_tags"):
        CRF(0)
    with pytest.raises(ValueError, match="needs potentials"):
        CRF(N)(np.zeros((2, T, N + 1), "float32"))


def test_float16_potentials():
    potentials, tags, mask, weights = _data(seed=10)
    half = potentials.astype("float16")
    crf = _layer(weights, dtype="mixed_float16")
    assert all(v.dtype == "float32" for v in crf.weights)
    ll = crf.log_likelihood(half, tags, mask)
    best, score = crf.decode(half, mask)
    assert ll.dtype == tf.float32 and score.dtype == tf.float32 and best.dtype == tf.int32
    rounded = half.astype("float32")  # the same values in float32
    np.testing.assert_allclose(ll, crf_log_likelihood(rounded, tags, mask, *weights), atol=ATOL)
    want_best, want_score = viterbi_decode(rounded, mask, *weights)
    np.testing.assert_array_equal(best, want_best)
    np.testing.assert_allclose(score, want_score, atol=ATOL)
    # Through __call__ (inputs cast to float16 by Keras, weights not autocast).
    np.testing.assert_array_equal(crf(potentials, mask=mask), want_best)
    _, grads = _loss_and_grads(crf, half, tags, mask)
    assert grads[0].dtype == tf.float16
    assert all(np.isfinite(np.asarray(g, "float32")).all() for g in grads)


def test_mirrored_strategy_matches_eager():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py)")
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    potentials, tags, mask, weights = _data(seed=11)
    with strategy.scope():
        crf = _layer(weights)
    want_ll = np.asarray(crf_log_likelihood(potentials, tags, mask, *weights))
    want_best, _ = viterbi_decode(potentials, mask, *weights)

    dataset = tf.data.Dataset.from_tensor_slices((potentials, tags, mask)).batch(B)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(potentials, tags, mask):
        def replica_fn(potentials, tags, mask):
            ll, grads = _loss_and_grads(crf, potentials, tags, mask)
            return ll, crf.decode(potentials, mask)[0], grads[1:]

        ll, best, grads = strategy.run(replica_fn, args=(potentials, tags, mask))
        grads = [strategy.reduce("SUM", g, axis=None) for g in grads]
        return strategy.gather(ll, axis=0), strategy.gather(best, axis=0), grads

    ll, best, grads = step(*batch)
    np.testing.assert_allclose(ll, want_ll, atol=ATOL)
    np.testing.assert_array_equal(best, want_best)
    _, want_grads = _loss_and_grads(crf, potentials, tags, mask)
    for g, want in zip(grads, want_grads[1:]):
        np.testing.assert_allclose(g, want, atol=1e-4)
