"""RNNClassifier: padding never changes a prediction (every pooling, uni/bidirectional, each cell); saving."""

import numpy as np
import pytest

from keras_models.models.classifier import RNNClassifier
from requires import saved_and_loaded

VOCAB, CLASSES, T = 11, 3, 5
LENGTHS = [5, 3, 1, 4]


def _ids(seed=0, extra_pad=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(LENGTHS), T + extra_pad), "int32")
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = rng.integers(1, VOCAB, size=n)
    return ids


def _model(**kw):
    args = dict(embedding_dim=4, hidden_dim=4, seed=3)
    args.update(kw)
    return RNNClassifier(VOCAB, CLASSES, **args)


# Each pooling with and without a bidirectional encoder, the three cells spread over the cases.
@pytest.mark.parametrize(
    "pooling, bidirectional, cell, extra",
    [
        ("last", True, "lstm", {}),
        ("last", False, "gru", {"num_layers": 2}),
        ("mean", True, "rnn", {"mlp_dims": [6]}),
        ("mean", False, "lstm", {}),
        ("max", True, "gru", {"num_layers": 2, "mlp_dims": [6, 5]}),
        ("max", False, "rnn", {"activation": "relu"}),
    ],
)
def test_padding_never_changes_a_prediction(pooling, bidirectional, cell, extra):
    model = _model(cell=cell, pooling=pooling, bidirectional=bidirectional, **extra)
    ids = _ids()
    batch = np.asarray(model(ids))
    assert batch.shape == (len(LENGTHS), CLASSES) and batch.dtype == np.float32
    for b, n in enumerate(LENGTHS):
        alone = np.asarray(model(ids[b : b + 1, :n]))[0]
        np.testing.assert_allclose(batch[b], alone, rtol=1e-5, atol=1e-5)
    # More padding columns and an all-padding row change nothing either (and give finite logits).
    padded = np.concatenate([_ids(extra_pad=3), np.zeros((1, T + 3), "int32")])
    more = np.asarray(model(padded))
    np.testing.assert_allclose(more[: len(LENGTHS)], batch, rtol=1e-5, atol=1e-5)
    assert np.isfinite(more).all()


def test_bidirectional_last_reads_the_whole_text_both_ways():
    model = _model(cell="lstm", pooling="last", bidirectional=True)
    ids = _ids(seed=2)
    encoding = np.asarray(model.encode(ids))
    x, mask = model.embedding(ids), ids != 0
    layer = model.recurrent_layers[0]
    forward = np.asarray(layer.forward_layer(x, mask=mask))
    backward = np.asarray(layer.backward_layer(x, mask=mask))  # in reading order: last = read all
    for b, n in enumerate(LENGTHS):
        expected = np.concatenate([forward[b, n - 1], backward[b, -1]])
        np.testing.assert_allclose(encoding[b], expected, rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training_and_save_load(tmp_path):
    model = _model(cell="gru", pooling="mean", mlp_dims=[6], dropout=0.5, recurrent_dropout=0.3)
    ids = _ids(seed=1)
    logits = np.asarray(model(ids))
    np.testing.assert_allclose(np.asarray(model(ids)), logits)  # inference is deterministic
    assert not np.allclose(np.asarray(model(ids, training=True)), logits)

    config = model.get_config()
    for key, value in {"pooling": "mean", "mlp_dims": [6], "bidirectional": True, "dropout": 0.5}.items():
        assert config[key] == value
    saved_and_loaded(model, tmp_path / "classifier.keras", ids, logits)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pooling"):
        _model(pooling="sum")
    with pytest.raises(TypeError, match="cell"):
        _model(cell=object())
