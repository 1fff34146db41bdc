"""Greedy and beam search against a numpy mirror of toy step functions and brute-force enumeration."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.decoding import beam_search, greedy_search, tile_state

BOS, EOS = 0, 1
ATOL = 1e-4


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


class Bigram:
    """Logits depend only on the previous token; the state is a step counter."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float32)
        self.vocab = self.table.shape[0]

    def step(self, tokens, state):
        return tf.gather(tf.constant(self.table), tokens), state + 1

    def initial_state(self, batch):
        return tf.zeros([batch], tf.int32)

    def logp(self, inputs, row):
        """Next-token log-probabilities after the input tokens `inputs` (bos first)."""
        return _log_softmax(self.table[inputs[-1]])


class Stateful:
    """Logits depend on the previous token, on the sum of the inputs mod vocab and on a per-row bias.

    The state is a nest: a recurrent part (the running sum) and a per-row
    constant (the bias, standing for an encoder memory).
    """

    def __init__(self, seed, vocab, batch):
        rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.t1 = rng.normal(scale=2.0, size=(vocab, vocab)).astype("float32")
        self.t2 = rng.normal(scale=2.0, size=(vocab, vocab)).astype("float32")
        self.bias = rng.normal(scale=1.0, size=(batch, vocab)).astype("float32")

    def step(self, tokens, state):
        s = (state["sum"] + tokens) % self.vocab
        logits = tf.gather(tf.constant(self.t1), tokens) + tf.gather(tf.constant(self.t2), s) + state["bias"]
        return logits, {"sum": s, "bias": state["bias"]}

    def initial_state(self, batch, rows=None):
        bias = self.bias[:batch] if rows is None else self.bias[rows]
        return {"sum": tf.zeros([len(bias)], tf.int32), "bias": tf.constant(bias)}

    def logp(self, inputs, row):
        s = sum(inputs) % self.vocab
        return _log_softmax(self.t1[inputs[-1]] + self.t2[s] + self.bias[row])


def _bigram(seed, vocab, scale=2.0):
    return Bigram(np.random.default_rng(seed).normal(scale=scale, size=(vocab, vocab)))


def _numpy_greedy(model, row, max_length):
    inputs, out = [BOS], []
    while len(out) < max_length:
        nxt = int(np.argmax(model.logp(inputs, row)))
        out.append(nxt)
        inputs.append(nxt)
        if nxt == EOS:
            break
    return out


def _all_hypotheses(model, row, max_length):
    """Every complete sequence (ends at its first eos, or has max_length tokens) and its sum of log p."""
    out = []

    def rec(inputs, seq, score):
        logp = model.logp(inputs, row)
        for v in range(model.vocab):
            new, s = seq + [v], score + logp[v]
            if v == EOS or len(new) == max_length:
                out.append((new, s))
            else:
                rec(inputs + [v], new, s)

    rec([BOS], [], 0.0)
    return out


def _normalized(score, length, length_penalty):
    return score / float(length) ** length_penalty


def _score_of(model, row, seq):
    inputs, total = [BOS], 0.0
    for v in seq:
        total += model.logp(inputs, row)[v]
        inputs.append(v)
    return total


def _check_hypotheses(model, tokens, scores, lengths, max_length, length_penalty, rows=None):
    """Well-formed, sorted hypotheses whose scores are the recomputed normalized sums of log p."""
    tokens, scores, lengths = np.asarray(tokens), np.asarray(scores), np.asarray(lengths)
    for b in range(tokens.shape[0]):
        row = b if rows is None else rows[b]
        assert np.all(np.diff(scores[b]) <= 1e-6), scores[b]
        seen = set()
        for j in range(tokens.shape[1]):
            n = int(lengths[b, j])
            seq = tokens[b, j, :n].tolist()
            assert 1 <= n <= max_length
            assert np.all(tokens[b, j, n:] == 0)
            assert EOS not in seq[:-1]  # stops at its first eos
            assert seq[-1] == EOS or n == max_length
            expected = _normalized(_score_of(model, row, seq), n, length_penalty)
            np.testing.assert_allclose(scores[b, j], expected, atol=ATOL)
            seen.add(tuple(seq))
        assert len(seen) == tokens.shape[1]  # distinct hypotheses


def test_tile_state_repeats_rows_of_a_nest():
    state = {"h": tf.constant([[1.0, 2.0], [3.0, 4.0]]), "n": (tf.constant([5, 6]),)}
    tiled = tile_state(state, 3)
    np.testing.assert_array_equal(tiled["h"], [[1, 2]] * 3 + [[3, 4]] * 3)
    np.testing.assert_array_equal(tiled["n"][0], [5, 5, 5, 6, 6, 6])
    with pytest.raises(ValueError):
        tile_state(state, 0)


@pytest.mark.parametrize("kind", ["bigram", "stateful"])
def test_greedy_matches_numpy(kind):
    batch, max_length = 4, 7
    model = _bigram(0, 6) if kind == "bigram" else Stateful(1, 6, batch)
    tokens, lengths = greedy_search(
        model.step, model.initial_state(batch), bos_id=BOS, eos_id=EOS, max_length=max_length
    )
    tokens, lengths = tokens.numpy(), lengths.numpy()
    expected = [_numpy_greedy(model, b, max_length) for b in range(batch)]
    assert tokens.dtype == np.int32 and lengths.dtype == np.int32
    assert tokens.shape == (batch, max(len(e) for e in expected))
    for b, exp in enumerate(expected):
        assert lengths[b] == len(exp)
        np.testing.assert_array_equal(tokens[b, : len(exp)], exp)
        assert np.all(tokens[b, len(exp) :] == 0)


def test_greedy_stops_early_and_caps_at_max_length():
    vocab = 4
    table = np.zeros((vocab, vocab), "float32")
    table[BOS, 2] = 5.0  # bos -> 2 -> eos
    table[2, EOS] = 5.0
    tokens, lengths = greedy_search(Bigram(table).step, tf.zeros([2]), bos_id=BOS, eos_id=EOS, max_length=10)
    np.testing.assert_array_equal(tokens, [[2, EOS], [2, EOS]])
    np.testing.assert_array_equal(lengths, [2, 2])

    table[2, EOS], table[2, 3], table[3, 2] = 0.0, 5.0, 5.0  # 2 <-> 3, never eos
    tokens, lengths = greedy_search(Bigram(table).step, tf.zeros([1]), bos_id=BOS, eos_id=EOS, max_length=5)
    np.testing.assert_array_equal(tokens, [[2, 3, 2, 3, 2]])
    np.testing.assert_array_equal(lengths, [5])


def _beam(model, batch, beam_size, max_length, length_penalty):
    """``beam_search`` of ``model`` from its initial state for ``batch`` rows."""
    return beam_search(model.step, model.initial_state(batch), beam_size=beam_size, bos_id=BOS, eos_id=EOS,
                       max_length=max_length, length_penalty=length_penalty)


@pytest.mark.parametrize("kind", ["bigram", "stateful"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_1_equals_greedy(kind, seed):
    batch, max_length = 3, 8
    model = _bigram(seed, 5) if kind == "bigram" else Stateful(seed, 5, batch)
    g_tokens, g_lengths = greedy_search(
        model.step, model.initial_state(batch), bos_id=BOS, eos_id=EOS, max_length=max_length
    )
    b_tokens, b_scores, b_lengths = _beam(model, batch, 1, max_length, 0.0)
    assert b_tokens.shape[:2] == (batch, 1)
    np.testing.assert_array_equal(b_tokens[:, 0], g_tokens)
    np.testing.assert_array_equal(b_lengths[:, 0], g_lengths)


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("kind", ["bigram", "stateful"])
def test_exhaustive_beam_equals_brute_force(kind, length_penalty):
    """A beam holding every prefix finds the brute-force top beam_size hypotheses."""
    vocab, max_length, batch = 4, 3, 2
    beam = vocab * (vocab - 1) ** (max_length - 1)  # every continuation at every step: 36
    model = _bigram(3, vocab) if kind == "bigram" else Stateful(4, vocab, batch)
    tokens, scores, lengths = _beam(model, batch, beam, max_length, length_penalty)
    assert tokens.shape == (batch, beam, max_length) and scores.dtype == tf.float32
    for b in range(batch):
        ranked = sorted(
            ((_normalized(s, len(seq), length_penalty), seq) for seq, s in _all_hypotheses(model, b, max_length)),
            key=lambda x: -x[0],
        )
        np.testing.assert_allclose(scores[b], [s for s, _ in ranked[:beam]], atol=ATOL)
        best = ranked[0][1]
        assert lengths[b, 0] == len(best)
        np.testing.assert_array_equal(tokens[b, 0, : len(best)], best)
    _check_hypotheses(model, tokens, scores, lengths, max_length, length_penalty)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["bigram", "stateful"])
def test_small_beam_hypotheses_are_consistent(kind, length_penalty):
    """Sorted, distinct, stopped at the first eos, padded with 0, scores = recomputed normalized log p."""
    vocab, max_length, batch, beam = 6, 6, 3, 4
    model = _bigram(5, vocab, scale=1.5) if kind == "bigram" else Stateful(6, vocab, batch)
    tokens, scores, lengths = _beam(model, batch, beam, max_length, length_penalty)
    assert tokens.shape[:2] == (batch, beam) and tokens.shape[2] == int(np.max(lengths))
    _check_hypotheses(model, tokens, scores, lengths, max_length, length_penalty)


def test_rows_of_a_batch_are_independent():
    vocab, max_length, batch, beam = 5, 6, 3, 3
    model = Stateful(7, vocab, batch)
    tokens, scores, lengths = beam_search(
        model.step, model.initial_state(batch), beam_size=beam, bos_id=BOS, eos_id=EOS, max_length=max_length
    )
    g_tokens, g_lengths = greedy_search(
        model.step, model.initial_state(batch), bos_id=BOS, eos_id=EOS, max_length=max_length
    )
    for b in range(batch):
        t1, s1, l1 = beam_search(
            model.step,
            model.initial_state(1, rows=[b]),
            beam_size=beam,
            bos_id=BOS,
            eos_id=EOS,
            max_length=max_length,
        )
        n = t1.shape[2]
        np.testing.assert_array_equal(tokens[b, :, :n], t1[0])
        assert np.all(tokens[b, :, n:] == 0)
        np.testing.assert_allclose(scores[b], s1[0], atol=1e-6)
        np.testing.assert_array_equal(lengths[b], l1[0])

        gt, gl = greedy_search(
            model.step, model.initial_state(1, rows=[b]), bos_id=BOS, eos_id=EOS, max_length=max_length
        )
        np.testing.assert_array_equal(g_tokens[b, : gt.shape[1]], gt[0])
        assert g_lengths[b] == gl[0]


def test_inside_tf_function_with_unknown_batch():
    vocab, max_length, batch, k = 5, 6, 3, 3
    model = Stateful(8, vocab, batch)
    spec = {"sum": tf.TensorSpec([None], tf.int32), "bias": tf.TensorSpec([None, vocab], tf.float32)}

    @tf.function(input_signature=[spec])
    def beam(state):
        return beam_search(
            model.step, state, beam_size=k, bos_id=BOS, eos_id=EOS, max_length=max_length, length_penalty=0.6
        )

    @tf.function(input_signature=[spec])
    def greedy(state):
        return greedy_search(model.step, state, bos_id=BOS, eos_id=EOS, max_length=max_length)

    state = model.initial_state(batch)
    for graph, eager in zip(
        beam(state),
        beam_search(
            model.step, state, beam_size=k, bos_id=BOS, eos_id=EOS, max_length=max_length, length_penalty=0.6
        ),
    ):
        np.testing.assert_allclose(graph, eager, atol=1e-6)
    eager = greedy_search(model.step, state, bos_id=BOS, eos_id=EOS, max_length=max_length)
    for graph_out, eager_out in zip(greedy(state), eager):
        np.testing.assert_array_equal(graph_out, eager_out)


def test_length_penalty_changes_the_choice():
    """bos -> eos (p .5) against bos -> 2 -> eos (p .48 * .9): the short one wins raw, the long one normalized."""
    probs = np.full((3, 3), 1e-3)
    probs[BOS] = [0.02, 0.5, 0.48]
    probs[2] = [0.05, 0.9, 0.05]
    model = Bigram(np.log(probs))
    kwargs = dict(beam_size=3, bos_id=BOS, eos_id=EOS, max_length=4)
    tokens, scores, lengths = beam_search(model.step, tf.zeros([1]), length_penalty=0.0, **kwargs)
    assert tokens[0, 0, : lengths[0, 0]].numpy().tolist() == [EOS]
    np.testing.assert_allclose(scores[0, 0], np.log(0.5), atol=ATOL)
    tokens, scores, lengths = beam_search(model.step, tf.zeros([1]), length_penalty=1.0, **kwargs)
    assert tokens[0, 0, : lengths[0, 0]].numpy().tolist() == [2, EOS]
    np.testing.assert_allclose(scores[0, 0], np.log(0.48 * 0.9) / 2, atol=ATOL)
    g_tokens, _ = greedy_search(model.step, tf.zeros([1]), bos_id=BOS, eos_id=EOS, max_length=4)
    assert g_tokens.numpy().tolist() == [[EOS]]


def test_stops_early_when_no_live_beam_can_win():
    """eos is near certain everywhere: two finished hypotheses after two steps end the search."""
    vocab, max_length = 3, 8
    probs = np.full((vocab, vocab), 0.005)
    probs[:, EOS] = 0.99
    probs[:, 2] = 0.005 * 0.5
    model = Bigram(np.log(probs))
    calls = tf.Variable(0)

    def step(tokens, state):
        calls.assign_add(1)
        return model.step(tokens, state)

    tokens, scores, lengths = beam_search(
        step, tf.zeros([1]), beam_size=2, bos_id=BOS, eos_id=EOS, max_length=max_length, length_penalty=0.0
    )
    assert int(calls.numpy()) == 2
    ranked = sorted((s, q) for q, s in _all_hypotheses(model, 0, max_length))[::-1]
    np.testing.assert_allclose(scores[0], [s for s, _ in ranked[:2]], atol=ATOL)
    assert tokens[0, 0, : lengths[0, 0]].numpy().tolist() == ranked[0][1]
    assert tokens[0, 1, : lengths[0, 1]].numpy().tolist() == ranked[1][1]


def test_beam_larger_than_the_search_space():
    """Three one-token hypotheses for five beams: the two missing ones are -inf, length 0, tokens 0."""
    model = _bigram(9, 3)
    tokens, scores, lengths = beam_search(
        model.step, tf.zeros([2]), beam_size=5, bos_id=BOS, eos_id=EOS, max_length=1
    )
    assert tokens.shape == (2, 5, 1)
    assert np.all(np.isfinite(scores[:, :3])) and np.all(np.isneginf(scores[:, 3:]))
    np.testing.assert_array_equal(lengths[:, 3:], 0)
    np.testing.assert_array_equal(tokens[:, 3:], 0)
    np.testing.assert_array_equal(np.sort(tokens[0, :3, 0]), [0, 1, 2])
    _check_hypotheses(model, tokens[:, :3], scores[:, :3], lengths[:, :3], 1, 1.0)


def test_rejects_bad_arguments():
    model = _bigram(0, 3)
    with pytest.raises(ValueError):
        beam_search(model.step, tf.zeros([1]), beam_size=0, bos_id=BOS, eos_id=EOS, max_length=3)
    with pytest.raises(ValueError):
        greedy_search(model.step, tf.zeros([1]), bos_id=BOS, eos_id=EOS, max_length=0)


def test_does_not_stop_while_a_longer_beam_can_still_win():
    """With length_penalty=1 a live beam's normalized score can still rise until max_length.

    After two steps the finished set is [eos] (-0.30) and [2, eos] (-0.70); the live beam [2, 3]
    has raw score -4.37, which divided by 3 (its next length) cannot beat -0.70, but divided by
    max_length=8 can: [2, 3, 3, 3, 3, 3, 3, 3] ends at -0.547 and must replace [2, eos].
    """
    probs = np.full((4, 4), 1e-4)
    probs[BOS] = [1e-4, 0.741, 0.259, 1e-4]
    probs[2] = [1e-4, 0.951, 1e-4, 0.049]
    probs[3] = [1e-4, 0.001, 1e-4, 0.999]
    model = Bigram(np.log(probs))
    max_length = 8
    tokens, scores, lengths = beam_search(
        model.step, tf.zeros([1]), beam_size=2, bos_id=BOS, eos_id=EOS, max_length=max_length, length_penalty=1.0
    )
    ranked = sorted(
        ((_normalized(s, len(q), 1.0), q) for q, s in _all_hypotheses(model, 0, max_length)), key=lambda x: -x[0]
    )
    assert ranked[1][1] == [2] + [3] * 7
    np.testing.assert_allclose(scores[0], [ranked[0][0], ranked[1][0]], atol=ATOL)
    assert tokens[0, 0, : lengths[0, 0]].numpy().tolist() == [EOS]
    assert tokens[0, 1].numpy().tolist() == [2] + [3] * 7


def test_keras_decoder_step_with_encoder_memory_in_tf_function():
    """A Keras GRU encoder-decoder: memory and mask ride in the state; unknown batch and source length."""
    vocab, units = 7, 8
    keras.utils.set_random_seed(0)
    embed = keras.layers.Embedding(vocab, units)
    encoder = keras.layers.GRU(units, return_sequences=True, return_state=True)
    cell = keras.layers.GRUCell(units)
    project = keras.layers.Dense(vocab)

    def step(tokens, state):
        mask = tf.cast(state["mask"], tf.float32)[..., None]
        context = tf.reduce_sum(state["memory"] * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        h, new = cell(tf.concat([embed(tokens), context], axis=-1), [state["h"]])
        return project(h), {"h": new[0], "memory": state["memory"], "mask": state["mask"]}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def decode(source):
        memory, h = encoder(embed(source))
        state = {"h": h, "memory": memory, "mask": source > 0}
        kwargs = dict(bos_id=BOS, eos_id=EOS, max_length=6)
        return (
            greedy_search(step, state, **kwargs),
            beam_search(step, state, beam_size=1, length_penalty=0.0, **kwargs),
            beam_search(step, state, beam_size=3, **kwargs),
        )

    source = tf.constant(np.random.default_rng(0).integers(0, vocab, (2, 5)), tf.int32)
    (g_tokens, g_lengths), (b1_tokens, _, b1_lengths), (tokens, scores, lengths) = decode(source)
    np.testing.assert_array_equal(b1_tokens[:, 0], g_tokens)
    np.testing.assert_array_equal(b1_lengths[:, 0], g_lengths)
    assert tokens.shape[:2] == (2, 3) and np.all(np.diff(scores.numpy(), axis=1) <= 1e-6)
    assert np.all((lengths.numpy() >= 1) & (lengths.numpy() <= 6))
