"""Generation (sampling filters, state reuse), the raw-string export, and the gradient-flow diagnostic."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.diagnostics import gradient_flow
from keras_models.export import LanguageModelScorer, TextToIds
from keras_models.generation import Generator, filter_logits, sample_next
from keras_models.models.language_model import RNNLanguageModel
from preprocessing.tokenizers import Tokenizer, TokenizerConfig
from preprocessing.vocab import EOS_ID, Vocabulary

VOCAB = Vocabulary(["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"])


def _model(cell="lstm", tie=False, **kw):
    m = RNNLanguageModel(len(VOCAB), cell=cell, num_layers=2, embedding_dim=4, hidden_dim=4, tie_weights=tie, seed=1, **kw)
    m.build((None, None))
    return m


def test_top_k_and_top_p_filters():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(filter_logits(logits, top_k=2)).tolist() == [True, True, False, False]
    # top-p 0.7: 0.5 alone is below 0.7, so 0.3 joins; the rest are cut.
    assert np.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [True, True, False, False]
    assert np.isfinite(filter_logits(logits, top_p=0.85)).tolist() == [True, True, True, False]
    rng = np.random.default_rng(0)
    assert sample_next(logits, rng, temperature=0) == 0
    draws = {sample_next(logits, rng, temperature=1.0, top_k=2) for _ in range(200)}
    assert draws == {0, 1}
    assert sample_next(logits, rng, temperature=0, banned=(0,)) == 1


def test_generation_keeps_only_the_last_state():
    model = _model("gru")
    gen = Generator(model)
    prompt = [EOS_ID, 4, 5]
    out = gen.generate(prompt, max_tokens=6, temperature=0)
    # Reference: greedy decoding that re-reads the whole sequence every step.
    seq = list(prompt)
    for _ in range(6):
        logits = model(np.array([seq], np.int32))
        seq.append(int(np.argmax(logits[0, -1])))
    assert out == seq[len(prompt):]
    assert gen.generate(prompt, 5, temperature=1.0, seed=3) == gen.generate(prompt, 5, temperature=1.0, seed=3)
    with pytest.raises(ValueError, match="at least one token"):
        gen.generate([], 3)


def test_text_to_ids_matches_the_prepare_job_encoding():
    tok_cfg = TokenizerConfig(level="word", lowercase=True)
    layer = TextToIds(tok_cfg.to_dict(), VOCAB.tokens)
    texts = ["The cat sat", "a DOG on the zebra mat"]
    ids = layer(tf.constant(texts)).numpy()
    tokenizer = Tokenizer(tok_cfg)
    for row, text in zip(ids, texts):
        expected = VOCAB.encode(tokenizer.tokenize_py(text)) + [EOS_ID]
        assert row[: len(expected)].tolist() == expected
        assert (row[len(expected):] == 0).all()


@pytest.mark.parametrize("tie", [False, True])
def test_scorer_log_prob_matches_the_model_and_survives_save_load(tmp_path, tie):
    model = _model("lstm", tie=tie)
    scorer = LanguageModelScorer(TextToIds({"level": "word"}, VOCAB.tokens), model)
    texts = ["the cat sat on the mat", "a dog"]
    out = scorer(tf.constant(texts))
    ids = VOCAB.encode("a dog".split()) + [EOS_ID]
    logits = model(np.array([[EOS_ID] + ids[:-1]], np.int32))
    logp = tf.nn.log_softmax(logits[0]).numpy()
    expected = sum(logp[t, i] for t, i in enumerate(ids))
    assert float(out["log_prob"][1]) == pytest.approx(expected, rel=1e-5)
    assert out["num_tokens"].numpy().tolist() == [7, 3]
    path = tmp_path / "scorer.keras"
    scorer.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(tf.constant(texts))["log_prob"], out["log_prob"], rtol=1e-6)
    assert loaded.vocabulary == VOCAB.tokens


def _reference_flow(model, ids, t):
    """dL_T/dh_t by adding a zero perturbation to the top layer's output at step t."""
    eps = tf.zeros((ids.shape[0], model.hidden_dim))
    with tf.GradientTape() as tape:
        tape.watch(eps)
        x = model.embedding(ids)
        states = model.initial_state(ids.shape[0])
        for step in range(ids.shape[1]):
            h = x[:, step, :]
            for i, layer in enumerate(model.recurrent_layers):
                h, new = layer.cell(h, list(states[i]), training=False)
                if i == len(model.recurrent_layers) - 1 and step == t:
                    h = h + eps
                    new = [h] + list(new[1:])  # the perturbed output is also the carried h
                states[i] = list(new)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(ids[:, -1], model.output_layer(h), from_logits=True))
    return float(tf.reduce_mean(tf.norm(tape.gradient(loss, eps), axis=-1)))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_flow_matches_a_perturbation_reference(cell):
    ids = np.random.default_rng(0).integers(4, len(VOCAB), (3, 8)).astype(np.int32)
    model = _model(cell)
    norms = gradient_flow(model, ids, ids)
    assert norms.shape == (8,)
    for t in (0, 4, 7):
        assert norms[t] == pytest.approx(_reference_flow(model, ids, t), rel=1e-4)


def test_gradient_flow_is_zero_without_recurrence():
    ids = np.random.default_rng(0).integers(4, len(VOCAB), (2, 6)).astype(np.int32)
    model = RNNLanguageModel(len(VOCAB), cell="rnn", num_layers=1, embedding_dim=4, hidden_dim=4)
    model.build((None, None))
    cell = model.recurrent_layers[0].cell
    cell.recurrent_kernel.assign(np.zeros(cell.recurrent_kernel.shape, "float32"))
    norms = gradient_flow(model, ids, ids)
    assert norms[-1] > 0 and np.allclose(norms[:-1], 0.0)
