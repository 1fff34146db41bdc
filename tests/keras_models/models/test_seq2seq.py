"""Seq2SeqModel: teacher forcing = step-by-step decoding, padding invariance, the masked loss, scheduled
sampling, the search interface, saving, XLA, mixed precision and a fit on a copy task."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.models.seq2seq import Seq2SeqModel
from preprocessing.vocab import BOS_ID, EOS_ID
from requires import fit_loss_sum, saved_and_loaded

SRC_VOCAB, TGT_VOCAB = 13, 11
SRC_LENGTHS = [5, 3, 1, 4]
TGT_LENGTHS = [4, 2, 3, 1]  # target_in lengths, <bos> included


def _batch(seed=0, extra_source=0, extra_target=0):
    """Right-padded source ids [B, S], target_in [B, T] (<bos> first) and target_out [B, T] (<eos> last)."""
    rng = np.random.default_rng(seed)
    rows = len(SRC_LENGTHS)
    source = np.zeros((rows, max(SRC_LENGTHS) + extra_source), "int32")
    target_in = np.zeros((rows, max(TGT_LENGTHS) + extra_target), "int32")
    target_out = np.zeros_like(target_in)
    for b, (n, m) in enumerate(zip(SRC_LENGTHS, TGT_LENGTHS)):
        source[b, :n] = rng.integers(4, SRC_VOCAB, size=n)
        words = rng.integers(4, TGT_VOCAB, size=m - 1)
        target_in[b, :m] = [BOS_ID, *words]
        target_out[b, :m] = [*words, EOS_ID]
    return source, target_in, target_out


def _model(**kw):
    args = dict(embedding_dim=4, hidden_dim=5, encoder_layers=1, seed=3)
    args.update(kw)
    return Seq2SeqModel(SRC_VOCAB, TGT_VOCAB, **args)


def _inputs(source, target_in):
    return {"source_ids": source, "target_in": target_in}


def _step_by_step(model, source, target_in, feed_argmax=False):
    """Logits [B, T, V] and attention [B, T, S] from decode_step fed the gold prefix (or its own argmax)."""
    encoded = model.encode(source)
    state = model.initial_decoder_state(encoded)
    tokens = target_in[:, 0]
    logits, attention = [], []
    for t in range(target_in.shape[1]):
        step_logits, state, weights = model.decode_step(tokens, state, encoded)
        logits.append(np.asarray(step_logits))
        attention.append(np.asarray(weights))
        if t + 1 < target_in.shape[1]:
            tokens = np.asarray(step_logits).argmax(-1) if feed_argmax else target_in[:, t + 1]
    return np.stack(logits, 1), np.stack(attention, 1)


@pytest.mark.parametrize(
    "cell, attention, layers, input_feeding",
    [("lstm", "additive", 2, True), ("gru", "bilinear", 1, False), ("rnn", "dot", 1, True)],
)
def test_teacher_forcing_equals_step_by_step_decoding(cell, attention, layers, input_feeding):
    extra = {"decoder_dim": 10} if attention == "dot" else {}
    model = _model(cell=cell, attention=attention, decoder_layers=layers, encoder_layers=layers,
                   input_feeding=input_feeding, **extra)
    source, target_in, _ = _batch()
    logits = np.asarray(model(_inputs(source, target_in)))
    assert logits.shape == (len(SRC_LENGTHS), target_in.shape[1], TGT_VOCAB) and logits.dtype == np.float32
    stepped, attention_steps = _step_by_step(model, source, target_in)
    np.testing.assert_allclose(logits, stepped, rtol=1e-5, atol=1e-6)

    maps = np.asarray(model.attention_maps(source, target_in))
    np.testing.assert_allclose(maps, attention_steps, rtol=1e-5, atol=1e-6)
    source_mask = source != 0
    assert (maps[~np.broadcast_to(source_mask[:, None], maps.shape)] == 0).all()
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)

    # The search interface: the same logits, also after tiling the state as a beam search does.
    beams = 2
    state = model.search_state(model.encode(source))
    state = tf.nest.map_structure(lambda x: tf.repeat(x, beams, axis=0), state)
    step = model.step_fn()
    tokens = np.repeat(target_in[:, 0], beams)
    for t in range(target_in.shape[1]):
        step_logits, state = step(tokens, state)
        np.testing.assert_allclose(np.asarray(step_logits), np.repeat(logits[:, t], beams, axis=0),
                                   rtol=1e-5, atol=1e-6)
        tokens = np.repeat(target_in[:, min(t + 1, target_in.shape[1] - 1)], beams)
    assert set(state) == {"decoder", "memory", "mask"} | ({"prepared_keys"} if attention != "dot" else set())


def test_padding_changes_nothing_and_loss_is_masked_cross_entropy():
    model = _model(encoder_layers=2)
    source, target_in, target_out = _batch(seed=1)
    logits = np.asarray(model(_inputs(source, target_in)))

    # Padding columns appended to the source and the target: same logits at the real steps.
    source2, target_in2, target_out2 = _batch(seed=1, extra_source=3, extra_target=2)
    logits2 = np.asarray(model(_inputs(source2, target_in2)))
    np.testing.assert_allclose(logits2[:, : target_in.shape[1]], logits, rtol=1e-5, atol=1e-6)
    maps = np.asarray(model.attention_maps(source2, target_in2))
    assert (maps[:, :, source.shape[1]:] == 0).all()

    loss, count = model.loss_sum(_inputs(source, target_in), target_out)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = target_out != 0
    expected = -sum(log_probs[b, t, target_out[b, t]] for b, t in zip(*np.nonzero(real)))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(count) == sum(TGT_LENGTHS)
    loss2, count2 = model.loss_sum(_inputs(source2, target_in2), target_out2)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-5)
    assert float(count2) == float(count)

    # Other source tokens change the output: the decoder does read the source.
    other = source.copy()
    other[0, 1] = 4 if other[0, 1] != 4 else 5
    changed = np.asarray(model(_inputs(other, target_in)))
    assert not np.allclose(changed[0], logits[0], atol=1e-6)
    np.testing.assert_allclose(changed[1:], logits[1:], rtol=1e-5, atol=1e-6)


def test_dropout_scheduled_sampling_and_errors():
    source, target_in, target_out = _batch(seed=2)
    inputs = _inputs(source, target_in)
    model = _model(dropout=0.3, recurrent_dropout=0.2, decoder_layers=2)
    eval_logits = np.asarray(model(inputs))
    np.testing.assert_allclose(np.asarray(model(inputs, training=False)), eval_logits)
    assert not np.allclose(np.asarray(model(inputs, training=True)), eval_logits)  # dropout in training
    encoded = model.encode(source, training=True)
    logits, state, weights = model.decode_step(target_in[:, 0], model.initial_decoder_state(encoded), encoded,
                                               training=True)  # fresh masks for one step
    assert logits.shape == (len(SRC_LENGTHS), TGT_VOCAB) and weights.shape == source.shape

    # Scheduled sampling with probability 1 and no dropout: the model's own argmax is fed after the
    # first step, i.e. greedy decoding; outside training (or with probability 0) teacher forcing.
    sampler = _model(sampling_probability=1.0)
    sampled = np.asarray(sampler(inputs, training=True))
    greedy, _ = _step_by_step(sampler, source, target_in, feed_argmax=True)
    np.testing.assert_allclose(sampled, greedy, rtol=1e-5, atol=1e-6)
    as_tensor = tf.function(lambda x, p: sampler(x, training=True, sampling_probability=p))  # a schedule
    np.testing.assert_allclose(np.asarray(as_tensor(inputs, tf.constant(1.0))), sampled, rtol=1e-5, atol=1e-6)
    forced = np.asarray(sampler(inputs, training=False))
    np.testing.assert_allclose(np.asarray(sampler(inputs, training=True, sampling_probability=0.0)), forced,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sampled[:, 0], forced[:, 0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(sampled, forced, atol=1e-4)

    with pytest.raises(ValueError, match="decoder_dim"):
        _model(attention="dot")  # decoder 5 vs memory 2 * 5
    with pytest.raises(ValueError, match="source_ids"):
        model(source)
    with pytest.raises(TypeError, match="cell"):
        _model(cell=keras.layers.GRUCell(4))


def test_save_load_config_and_mixed_precision(tmp_path):
    model = _model(cell="lstm", decoder_layers=2, attention="bilinear", dropout=0.1, recurrent_dropout=0.1,
                   sampling_probability=0.25)
    source, target_in, target_out = _batch(seed=3)
    inputs = _inputs(source, target_in)
    logits = np.asarray(model(inputs))
    loaded = saved_and_loaded(model, tmp_path / "seq2seq.keras", inputs, logits)
    stepped, _ = _step_by_step(loaded, source, target_in)
    np.testing.assert_allclose(stepped, logits, rtol=1e-5, atol=1e-6)
    assert loaded.get_config() == model.get_config()

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        half = _model(cell="gru", decoder_layers=2)
        out = half(inputs)
        assert out.dtype == tf.float32
        assert np.isfinite(np.asarray(half.loss_sum(inputs, target_out)[0]))
        state = half.search_state(half.encode(source))
        logits_1, state_1 = half.step_fn()(target_in[:, 0], state)
        assert logits_1.dtype == tf.float32
        # The step keeps the state's dtypes (float16), as a search's while loop requires.
        for a, b in zip(tf.nest.flatten(state), tf.nest.flatten(state_1)):
            assert a.dtype == b.dtype, (a.dtype, b.dtype)
        np.testing.assert_allclose(np.asarray(logits_1), np.asarray(out)[:, 0], rtol=2e-2, atol=2e-2)
    finally:
        keras.config.set_dtype_policy(policy)


def test_xla_call_and_loss_sum():
    model = _model(cell="lstm", decoder_layers=2, dropout=0.2, recurrent_dropout=0.2,
                   sampling_probability=0.3)
    source, target_in, target_out = _batch(seed=4)
    inputs = _inputs(source, target_in)
    call = tf.function(lambda x: model(x), jit_compile=True)
    np.testing.assert_allclose(np.asarray(call(inputs)), np.asarray(model(inputs)), rtol=1e-5, atol=1e-6)
    loss_sum = tf.function(lambda x, y: model.loss_sum(x, y, training=True), jit_compile=True)
    loss, count = loss_sum(inputs, target_out)
    assert np.isfinite(float(loss)) and float(count) == sum(TGT_LENGTHS)


def test_fit_learns_to_copy():
    rng = np.random.default_rng(0)
    rows, length = 64, 5
    source = np.zeros((rows, length), "int32")
    target_in = np.zeros((rows, length + 1), "int32")
    target_out = np.zeros_like(target_in)
    for b, n in enumerate(rng.integers(2, length + 1, size=rows)):
        words = rng.integers(4, 10, size=n)
        source[b, :n] = words
        target_in[b, : n + 1] = [BOS_ID, *words]
        target_out[b, : n + 1] = [*words, EOS_ID]
    model = Seq2SeqModel(10, 10, cell="gru", encoder_layers=1, embedding_dim=16, hidden_dim=16, seed=0)
    optimizer = keras.optimizers.Adam(0.02)
    inputs = _inputs(source, target_in)
    first, last = fit_loss_sum(model, optimizer, inputs, target_out, steps=80)  # XLA is tested above
    print(f"copy task: mean loss {first:.3f} -> {last:.3f}")
    assert last < 0.2 * first, (first, last)
    predicted = np.asarray(model(inputs)).argmax(-1)
    assert (predicted == target_out)[target_out != 0].mean() > 0.9
