"""Cells against NumPy steps of the textbook equations and Keras' built-in cells."""

import keras
import numpy as np
import pytest

from keras_models.layers.cells import GRUCell, LSTMCell, SimpleRNNCell, get_cell

B, T, D, H = 2, 5, 3, 4
ATOL = 1e-5


def _inputs(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _randomize(cell, seed=1):
    """Non-trivial weights (nonzero biases too), deterministic."""
    rng = np.random.default_rng(seed)
    weights = cell.get_weights()
    cell.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in weights])


# -- NumPy steps of the textbook equations: (x, states, W, U, b) -> new states, output first ----------
def np_elman(act):
    def step(x, states, W, U, b):
        return [act(x @ W + states[0] @ U + b)]

    return step


def np_lstm(x, states, W, U, b):
    h, c = states
    Wi, Wf, Wc, Wo = np.split(W, 4, axis=1)
    Ui, Uf, Uc, Uo = np.split(U, 4, axis=1)
    bi, bf, bc, bo = np.split(b, 4)
    i = _sigmoid(x @ Wi + h @ Ui + bi)
    f = _sigmoid(x @ Wf + h @ Uf + bf)
    o = _sigmoid(x @ Wo + h @ Uo + bo)
    c_new = f * c + i * np.tanh(x @ Wc + h @ Uc + bc)
    return [o * np.tanh(c_new), c_new]


def np_gru(x, states, W, U, b):
    (h,) = states
    Wz, Wr, Wh = np.split(W, 3, axis=1)
    Uz, Ur, Uh = np.split(U, 3, axis=1)
    bz, br, bh = np.split(b, 3)
    z = _sigmoid(x @ Wz + h @ Uz + bz)
    r = _sigmoid(x @ Wr + h @ Ur + br)
    h_tilde = np.tanh(x @ Wh + (r * h) @ Uh + bh)
    return [z * h + (1.0 - z) * h_tilde]


def _run_cell(cell, x, states):
    outs = []
    for t in range(x.shape[1]):
        out, states = cell(x[:, t], states)
        outs.append(np.asarray(out))
    return np.stack(outs, 1), [np.asarray(s) for s in states]


@pytest.mark.parametrize(
    "make_cell, np_step",
    [
        (lambda: SimpleRNNCell(H, activation="tanh"), np_elman(np.tanh)),
        (lambda: SimpleRNNCell(H, activation="relu"), np_elman(lambda v: np.maximum(v, 0.0))),
        (lambda: LSTMCell(H), np_lstm),
        (lambda: GRUCell(H), np_gru),
    ],
    ids=["rnn_tanh", "rnn_relu", "lstm", "gru"],
)
def test_cell_matches_numpy(make_cell, np_step):
    cell = make_cell()
    cell.build((None, D))
    _randomize(cell)
    W, U, b = cell.get_weights()
    x = _inputs()
    initial = [_inputs(2 + i, (B, H)) for i in range(len(cell.state_size))]  # h (and c for the LSTM)
    outs, final = _run_cell(cell, x, initial)
    ref = initial
    for t in range(T):
        ref = np_step(x[:, t], ref, W, U, b)
        np.testing.assert_allclose(outs[:, t], ref[0], atol=ATOL)
    for got, want in zip(final, ref):
        np.testing.assert_allclose(got, want, atol=ATOL)


_PAIRS = [
    ("rnn_tanh", lambda: SimpleRNNCell(H), lambda: keras.layers.SimpleRNNCell(H)),
    (
        "rnn_relu",
        lambda: SimpleRNNCell(H, activation="relu"),
        lambda: keras.layers.SimpleRNNCell(H, activation="relu"),
    ),
    ("lstm", lambda: LSTMCell(H), lambda: keras.layers.LSTMCell(H)),
    ("gru", lambda: GRUCell(H), lambda: keras.layers.GRUCell(H, reset_after=False)),
]


@pytest.mark.parametrize("name,ours,theirs", _PAIRS, ids=[p[0] for p in _PAIRS])
def test_matches_keras_cell_with_copied_weights(name, ours, theirs):
    x = _inputs()
    ref = keras.layers.RNN(theirs(), return_sequences=True, return_state=True)
    ref_out = ref(x)
    _randomize(ref.cell)
    ref_out = ref(x)
    layer = keras.layers.RNN(ours(), return_sequences=True, return_state=True)
    layer(x)
    layer.cell.set_weights(ref.cell.get_weights())
    out = layer(x)
    assert len(out) == len(ref_out)
    for a, b in zip(out, ref_out):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL)


def test_weight_shapes_match_keras_layout():
    pairs = [
        (LSTMCell(H), keras.layers.LSTMCell(H)),
        (GRUCell(H), keras.layers.GRUCell(H, reset_after=False)),
        (SimpleRNNCell(H), keras.layers.SimpleRNNCell(H)),
    ]
    for ours, theirs in pairs:
        ours.build((None, D))
        theirs.build((None, D))
        assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]


def test_lstm_forget_bias_starts_at_one():
    cell = LSTMCell(H)
    cell.build((None, D))
    b = np.asarray(cell.bias)
    np.testing.assert_array_equal(b[H : 2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[H : 2 * H]), 0.0)
    plain = LSTMCell(H, unit_forget_bias=False)
    plain.build((None, D))
    np.testing.assert_array_equal(np.asarray(plain.bias), 0.0)


def test_lstm_default_initializers():
    cell = LSTMCell(H)
    assert isinstance(cell.kernel_initializer, keras.initializers.GlorotUniform)
    assert isinstance(cell.recurrent_initializer, keras.initializers.Orthogonal)


@pytest.mark.parametrize(
    "make", [lambda: SimpleRNNCell(H), lambda: LSTMCell(H), lambda: GRUCell(H)]
)
def test_call_is_step_of_projected_inputs(make):
    cell = make()
    cell.build((None, D))
    _randomize(cell)
    x = _inputs()
    projected = np.asarray(cell.project_inputs(x))
    assert projected.shape == (B, T, cell.num_gates * H)
    states = [np.zeros((B, s), "float32") for s in cell.state_size]
    via_step = states
    via_call = states
    for t in range(T):
        # the per-step projection equals the all-steps one
        step_projection = np.asarray(cell.project_inputs(x[:, t]))
        np.testing.assert_allclose(step_projection, projected[:, t], atol=ATOL)
        out_s, via_step = cell.step(projected[:, t], via_step)
        out_c, via_call = cell.call(x[:, t], via_call)
        np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_c), atol=ATOL)
    for a, b in zip(via_step, via_call):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL)


def test_sizes():
    assert SimpleRNNCell(H).state_size == [H]
    assert LSTMCell(H).state_size == [H, H]
    assert GRUCell(H).state_size == [H]
    for cell in (SimpleRNNCell(H), LSTMCell(H), GRUCell(H)):
        assert cell.output_size == H


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimpleRNNCell(H, activation="relu", use_bias=False, dropout=0.1, seed=3),
        lambda: LSTMCell(
            H, unit_forget_bias=False, recurrent_dropout=0.2, bias_initializer="ones"
        ),
        lambda: GRUCell(H, kernel_initializer="zeros", recurrent_initializer="glorot_uniform"),
    ],
)
def test_config_round_trip(make):
    cell = make()
    clone = type(cell).from_config(cell.get_config())
    assert clone.get_config() == cell.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert type(restored) is type(cell)
    assert restored.get_config() == cell.get_config()
    x = _inputs()
    cell.build((None, D))
    clone.build((None, D))
    clone.set_weights(cell.get_weights())
    s = [np.ones((B, n), "float32") for n in cell.state_size]
    np.testing.assert_allclose(
        np.asarray(cell(x[:, 0], s)[0]), np.asarray(clone(x[:, 0], s)[0]), atol=ATOL
    )


def test_get_cell():
    assert isinstance(get_cell("rnn", H), SimpleRNNCell)
    assert isinstance(get_cell("LSTM", H), LSTMCell)
    gru = get_cell("gru", H, recurrent_dropout=0.25)
    assert isinstance(gru, GRUCell) and gru.recurrent_dropout == 0.25
    assert get_cell("rnn", H, activation="relu").activation is keras.activations.relu
    cell = LSTMCell(H)
    assert get_cell(cell) is cell
    assert get_cell(cell, H) is cell
    with pytest.raises(ValueError, match="Unknown cell"):
        get_cell("transformer", H)
    with pytest.raises(ValueError, match="units"):
        get_cell("gru")
    with pytest.raises(ValueError):
        get_cell(cell, H + 1)
    with pytest.raises(TypeError):
        get_cell(3, H)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        LSTMCell(0)
    with pytest.raises(ValueError):
        GRUCell(H, dropout=1.0)
    with pytest.raises(ValueError):
        SimpleRNNCell(H, recurrent_dropout=-0.1)


def test_dropout_off_outside_training():
    cell = LSTMCell(H, dropout=0.5, recurrent_dropout=0.5, seed=0)
    layer = keras.layers.RNN(cell, return_sequences=True)
    x = _inputs()
    a = np.asarray(layer(x, training=False))
    b = np.asarray(layer(x))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(layer(x, training=True))
    assert not np.allclose(a, c)


def test_bidirectional_keras_rnn_with_our_cell():
    layer = keras.layers.Bidirectional(keras.layers.RNN(GRUCell(H), return_sequences=True))
    assert layer(_inputs()).shape == (B, T, 2 * H)
