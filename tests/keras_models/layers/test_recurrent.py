"""The Recurrent layer against keras.layers.RNN, masking, state carry, saving, XLA, dropout."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.layers.cells import GRUCell, LSTMCell, SimpleRNNCell
from keras_models.layers.recurrent import Recurrent

B, T, D, H = 2, 5, 3, 4
ATOL = 1e-5

CELLS = {
    "rnn": lambda **kw: SimpleRNNCell(H, **kw),
    "lstm": lambda **kw: LSTMCell(H, **kw),
    "gru": lambda **kw: GRUCell(H, **kw),
}
cell_names = pytest.mark.parametrize("name", sorted(CELLS))


def _inputs(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    weights = layer.get_weights()
    layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in weights])


def _np(xs):
    return [np.asarray(x) for x in xs] if isinstance(xs, (list, tuple)) else np.asarray(xs)


def _close(a, b, atol=ATOL):
    a, b = _np(a), _np(b)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, atol=atol)
    else:
        np.testing.assert_allclose(a, b, atol=atol)


def _layer(name, **kwargs):
    layer = Recurrent(CELLS[name](), **kwargs)
    layer(_inputs())
    _randomize(layer)
    return layer


@cell_names
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_equals_keras_rnn_on_same_cell(name, return_sequences, go_backwards):
    layer = _layer(
        name, return_sequences=return_sequences, return_state=True, go_backwards=go_backwards
    )
    ref = keras.layers.RNN(
        layer.cell, return_sequences=return_sequences, return_state=True, go_backwards=go_backwards
    )
    x = _inputs()
    init = [_inputs(5 + i, (B, s)) for i, s in enumerate(layer.cell.state_size)]
    _close(layer(x), ref(x))
    _close(layer(x, initial_state=init), ref(x, initial_state=init))
    out = layer(x)
    assert out[0].shape == ((B, T, H) if return_sequences else (B, H))
    assert len(out) == 1 + len(layer.cell.state_size)


@cell_names
def test_masked_right_padding_equals_truncated(name):
    layer = _layer(name, return_state=True)
    x = _inputs()
    lengths = np.array([T, 3])
    mask = np.arange(T)[None, :] < lengths[:, None]
    x_padded = np.where(mask[..., None], x, 0.0).astype("float32")
    out, *states = _np(layer(x_padded, mask=mask))
    ref = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
    _close([out, *states], ref(x_padded, mask=mask))
    for i, n in enumerate(lengths):
        t_out, *t_states = _np(layer(x[i : i + 1, :n]))
        np.testing.assert_allclose(out[i : i + 1, :n], t_out, atol=ATOL)
        for s, ts in zip(states, t_states):
            np.testing.assert_allclose(s[i : i + 1], ts, atol=ATOL)
        # masked steps repeat the previous output, like Keras
        for t in range(n, T):
            np.testing.assert_allclose(out[i, t], out[i, n - 1], atol=ATOL)
    last = Recurrent(layer.cell, return_sequences=False)(x_padded, mask=mask)
    np.testing.assert_allclose(np.asarray(last)[1], out[1, 2], atol=ATOL)


@cell_names
def test_looping_cell_call_equals_layer(name):
    layer = _layer(name, return_state=True)
    x = _inputs()
    out, *states = _np(layer(x))
    s = [np.zeros((B, n), "float32") for n in layer.cell.state_size]
    for t in range(T):
        o, s = layer.cell(x[:, t], s)
        np.testing.assert_allclose(np.asarray(o), out[:, t], atol=ATOL)
    _close(list(s), states)


@cell_names
def test_two_windows_with_carried_state_equal_joined_sequence(name):
    layer = _layer(name, return_state=True)
    x = _inputs(shape=(B, 2 * T, D))
    full, *full_states = _np(layer(x))
    first, *carry = layer(x[:, :T])
    second, *final = layer(x[:, T:], initial_state=carry)
    np.testing.assert_allclose(np.concatenate(_np([first, second]), 1), full, atol=ATOL)
    _close(list(final), full_states)


@cell_names
def test_bidirectional(name):
    x = _inputs()
    ours = keras.layers.Bidirectional(Recurrent(CELLS[name]()))
    ref = keras.layers.Bidirectional(keras.layers.RNN(CELLS[name](), return_sequences=True))
    ref(x)
    _randomize(ref)
    ours(x)
    ours.set_weights(ref.get_weights())
    assert ours.backward_layer.go_backwards and not ours.forward_layer.go_backwards
    _close(ours(x), ref(x))
    mask = np.arange(T)[None, :] < np.array([[T], [2]])
    _close(ours(x, mask=mask), ref(x, mask=mask))
    assert ours(x).shape == (B, T, 2 * H)


def test_bidirectional_return_state():
    x = _inputs()
    layer = keras.layers.Bidirectional(
        Recurrent(LSTMCell(H), return_sequences=False, return_state=True)
    )
    out, fh, fc, bh, bc = layer(x)
    assert out.shape == (B, 2 * H) and fh.shape == bc.shape == (B, H)


def _model(layer):
    inputs = keras.Input((T, D))
    return keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))


@cell_names
def test_config_and_keras_save_round_trip(name, tmp_path):
    layer = Recurrent(CELLS[name](), return_sequences=False, go_backwards=True, name="rec")
    clone = Recurrent.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert type(clone.cell) is type(layer.cell)
    model = _model(layer)
    x = _inputs()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("rec"), Recurrent)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))


def test_bidirectional_save_round_trip(tmp_path):
    inputs = keras.Input((T, D))
    outputs = keras.layers.Bidirectional(Recurrent(GRUCell(H)))(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "bi.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _inputs()
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))


def test_functional_mask_from_embedding():
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]], "int32")
    inputs = keras.Input((T,), dtype="int32")
    emb = keras.layers.Embedding(7, D, mask_zero=True)
    rec = Recurrent(LSTMCell(H), return_sequences=False)
    model = keras.Model(inputs, rec(emb(inputs)))
    out = np.asarray(model(ids))
    direct = np.asarray(rec(emb(ids[:1, :3])))
    np.testing.assert_allclose(out[:1], direct, atol=ATOL)


@cell_names
def test_jit_compile_equals_eager(name):
    layer = _layer(name, return_state=True)
    x = _inputs()
    mask = np.arange(T)[None, :] < np.array([[T], [3]])

    @tf.function(jit_compile=True)
    def run(x, mask):
        return layer(x, mask=mask)

    _close(run(x, mask), layer(x, mask=mask))


@cell_names
def test_gradients_equal_keras_rnn(name):
    layer = _layer(name)
    ref = keras.layers.RNN(layer.cell, return_sequences=True)
    x = tf.constant(_inputs())
    grads = []
    for lay in (layer, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(lay(x)))
        grads.append(tape.gradient(loss, [x, *layer.cell.trainable_variables]))
    _close(*grads)


def test_dropout_inference_is_deterministic_training_is_not():
    layer = _layer("lstm")
    dropped = Recurrent(LSTMCell(H, dropout=0.3, recurrent_dropout=0.3, seed=7))
    dropped(_inputs())
    dropped.set_weights(layer.get_weights())
    x = _inputs()
    ref = np.asarray(layer(x))
    np.testing.assert_array_equal(np.asarray(dropped(x)), ref)
    np.testing.assert_array_equal(np.asarray(dropped(x, training=False)), ref)
    a = np.asarray(dropped(x, training=True))
    b = np.asarray(dropped(x, training=True))
    assert not np.allclose(a, ref)
    assert not np.allclose(a, b)  # a new mask per call


def _identity_relu_rnn(**dropout):
    """h_t = relu(x_t W + (m * h_{t-1}) U) with W, U identities and no bias."""
    cell = SimpleRNNCell(8, activation="relu", use_bias=False, seed=3, **dropout)
    layer = Recurrent(cell)
    layer(np.zeros((B, T, 8), "float32"))
    cell.kernel.assign(np.eye(8, dtype="float32"))
    cell.recurrent_kernel.assign(np.eye(8, dtype="float32"))
    return layer


def test_recurrent_dropout_uses_one_mask_per_sequence():
    rate = 0.5
    layer = _identity_relu_rnn(recurrent_dropout=rate)
    x = np.zeros((B, T, 8), "float32")
    h0 = np.ones((B, 8), "float32")
    out = np.asarray(layer(x, initial_state=[h0], training=True))
    # With one mask m, h_t = m**t: the same units are zero at every step and
    # the others grow by 1 / (1 - rate) per step. Fresh masks would zero more
    # units step after step.
    zero = out[:, 0] == 0
    assert zero.any() and (~zero).any()
    for t in range(T):
        np.testing.assert_array_equal(out[:, t] == 0, zero)
        np.testing.assert_allclose(out[:, t][~zero], (1 / (1 - rate)) ** (t + 1), rtol=1e-5)
    inference = np.asarray(layer(x, initial_state=[h0], training=False))
    np.testing.assert_array_equal(inference, np.ones_like(inference))


def test_input_dropout_uses_one_mask_per_sequence():
    layer = _identity_relu_rnn(dropout=0.5)
    layer.cell.recurrent_kernel.assign(np.zeros((8, 8), "float32"))
    out = np.asarray(layer(np.ones((B, T, 8), "float32"), training=True))
    zero = out[:, 0] == 0
    assert zero.any() and (~zero).any()
    for t in range(T):
        np.testing.assert_array_equal(out[:, t], out[:, 0])


def test_dropout_under_jit_in_training():
    layer = Recurrent(GRUCell(H, dropout=0.2, recurrent_dropout=0.2, seed=1))
    x = _inputs()
    layer(x)

    @tf.function(jit_compile=True)
    def run(x):
        return layer(x, training=True)

    a, b = np.asarray(run(x)), np.asarray(run(x))
    assert np.isfinite(a).all() and not np.allclose(a, b)


@pytest.mark.parametrize("global_policy", [False, True])
def test_mixed_float16(global_policy):
    x = _inputs()
    ref = _layer("lstm", return_state=True)
    if global_policy:
        keras.config.set_dtype_policy("mixed_float16")
        try:
            layer = Recurrent(LSTMCell(H), return_state=True)
        finally:
            keras.config.set_dtype_policy("float32")
    else:
        cell = LSTMCell(H, dtype="mixed_float16")
        layer = Recurrent(cell, return_state=True, dtype="mixed_float16")
    layer(x)
    layer.set_weights(ref.get_weights())
    out, h, c = layer(x, mask=np.ones((B, T), bool))
    assert out.dtype == h.dtype == c.dtype == "float16"
    assert layer.cell.kernel.dtype == "float32"
    _close([out, h, c], ref(x), atol=1e-2)


def test_mirrored_strategy_trains():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py)")
    # No collective all-reduce: a second MirroredStrategy with collectives in
    # the same process can collide with this one's collective instance keys.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    x = _inputs(shape=(4, T, D))
    y = np.random.default_rng(1).integers(0, 2, size=(4,))
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input((T, D)),
                Recurrent(LSTMCell(H, recurrent_dropout=0.2, seed=0), return_sequences=False),
                keras.layers.Dense(2),
            ]
        )
        model.compile(
            "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False
        )
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    predicted = model.predict(x, batch_size=4, verbose=0)
    np.testing.assert_allclose(predicted, np.asarray(model(x)), atol=ATOL)


def test_requires_one_of_our_cells():
    with pytest.raises(TypeError, match="keras.layers.RNN"):
        Recurrent(keras.layers.LSTMCell(H))


def test_wrong_number_of_initial_states():
    layer = _layer("lstm")
    with pytest.raises(ValueError, match="initial state"):
        layer(_inputs(), initial_state=[np.zeros((B, H), "float32")])


def test_compute_output_shape_and_mask():
    layer = Recurrent(LSTMCell(H), return_state=True)
    assert layer.compute_output_shape((B, T, D)) == ((B, T, H), (B, H), (B, H))
    mask = np.ones((B, T), bool)
    assert layer.compute_mask(None, mask)[1:] == [None, None]
    assert Recurrent(GRUCell(H), return_sequences=False).compute_mask(None, mask) is None


def test_unknown_time_dimension():
    inputs = keras.Input((None, D))
    layer = Recurrent(GRUCell(H), return_state=True)
    model = keras.Model(inputs, layer(inputs))
    run = tf.function(model, input_signature=[tf.TensorSpec([None, None, D], tf.float32)])
    ref = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
    for steps in (T, T + 2):
        x = _inputs(shape=(B, steps, D))
        out, h = run(x)
        assert out.shape == (B, steps, H)
        _close([out, h], ref(x))
