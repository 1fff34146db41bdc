"""RecurrentEncoder, the backbone of the tagger, the classifier and the seq2seq encoder; the one loss contract."""

import keras
import numpy as np
import pytest

from keras_models.layers.cells import CELL_NAMES, model_cell_arguments
from keras_models.models.backbone import RecurrentEncoder
from keras_models.models.classifier import RNNClassifier
from keras_models.models.language_model import RNNLanguageModel
from keras_models.models.seq2seq import Seq2SeqModel
from keras_models.models.tagger import RNNTagger

VOCAB = 11
IDS = np.array([[3, 5, 2, 7, 0], [4, 6, 0, 0, 0]], "int32")


def test_model_cell_arguments_check_the_name_and_give_activation_only_to_elman():
    assert CELL_NAMES == ("rnn", "lstm", "gru")
    assert model_cell_arguments("rnn", 0.1, "relu") == {"recurrent_dropout": 0.1, "activation": "relu"}
    assert model_cell_arguments("RNN", 0.0, "relu") == {"recurrent_dropout": 0.0, "activation": "relu"}
    for cell in ("lstm", "gru"):
        assert model_cell_arguments(cell, 0.2, "relu") == {"recurrent_dropout": 0.2}
    with pytest.raises(TypeError, match="so that the model can be saved"):
        model_cell_arguments(keras.layers.GRUCell(4))
    with pytest.raises(ValueError, match="Unknown cell 'elman'"):
        model_cell_arguments("elman")


@pytest.mark.parametrize("model_class", [RNNTagger, RNNClassifier, Seq2SeqModel, RNNLanguageModel])
def test_every_model_checks_its_cell_in_the_same_place(model_class):
    with pytest.raises(ValueError, match="Unknown cell 'elman'"):
        model_class(VOCAB, VOCAB, cell="elman") if model_class is not RNNLanguageModel else model_class(
            VOCAB, cell="elman")


@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_encoder_masks_padding_and_names_and_seeds_its_layers(bidirectional):
    encoder = RecurrentEncoder(VOCAB, 4, "gru", 3, num_layers=2, bidirectional=bidirectional, dropout=0.5,
                               recurrent_dropout=0.25, seed=10, prefix="encoder_")
    assert encoder.build((None, None)) == encoder.output_dim == (6 if bidirectional else 3)
    prefix = "encoder_bi" if bidirectional else "encoder_"
    assert [layer.name for layer in encoder.recurrent_layers] == [f"{prefix}gru_0", f"{prefix}gru_1"]
    assert [d.name for d in encoder.dropouts] == ["encoder_dropout_0", "encoder_dropout_1"]
    assert [d.seed for d in encoder.dropouts] == [110, 111]
    assert encoder.make_dropout(2).name == "encoder_dropout_2" and encoder.make_dropout(2).seed == 112
    first = encoder.recurrent_layers[1]
    cell = (first.forward_layer if bidirectional else first).cell
    assert cell.seed == 12 and cell.recurrent_dropout == 0.25
    out = np.asarray(encoder(IDS))
    assert out.shape == (2, 5, encoder.output_dim)
    np.testing.assert_array_equal(out[1, 2:], 0.0)  # zeros at padding
    alone = np.asarray(encoder(IDS[1:, :2]))
    np.testing.assert_allclose(out[1, :2], alone[0], rtol=1e-5, atol=1e-6)


def test_the_encoder_concatenates_extra_features_to_the_embeddings():
    encoder = RecurrentEncoder(VOCAB, 4, "lstm", 3)
    encoder.build((None, None), features_dim=2)
    assert encoder.recurrent_layers[0].forward_layer.cell.kernel.shape == (6, 12)
    features = np.ones((2, 5, 2), "float32")
    assert np.asarray(encoder(IDS, features=features)).shape == (2, 5, 6)


def test_the_models_hold_the_backbone_layers_under_their_own_names():
    tagger = RNNTagger(VOCAB, 3, embedding_dim=4, hidden_dim=4, num_layers=2)
    assert tagger.embedding is tagger.backbone.embedding
    assert list(tagger.recurrent_layers) == tagger.backbone.recurrent_layers
    assert list(tagger.dropouts[:2]) == tagger.backbone.dropouts and len(tagger.dropouts) == 3
    classifier = RNNClassifier(VOCAB, 2, embedding_dim=4, hidden_dim=4, mlp_dims=[5])
    assert classifier.embedding is classifier.backbone.embedding
    assert list(classifier.dropouts[:1]) == classifier.backbone.dropouts and len(classifier.dropouts) == 3
    seq2seq = Seq2SeqModel(VOCAB, VOCAB, embedding_dim=4, hidden_dim=4)
    assert seq2seq.source_embedding is seq2seq.backbone.embedding
    assert list(seq2seq.encoder_rnns) == seq2seq.backbone.recurrent_layers
    assert list(seq2seq.encoder_dropouts) == seq2seq.backbone.dropouts
    # The backbone is no Keras object: it adds no variables and no layer of its own.
    for model in (tagger, classifier, seq2seq):
        assert not isinstance(model.backbone, keras.layers.Layer)


def test_every_model_has_the_same_loss_contract():
    labels = np.array([1, 0], "int32")
    tags = np.array([[1, 2, 0, 1, 0], [2, 1, 0, 0, 0]], "int32")
    target_in = np.array([[2, 4, 5], [2, 6, 0]], "int32")
    target_out = np.array([[4, 5, 3], [6, 3, 0]], "int32")
    lm = RNNLanguageModel(VOCAB, num_layers=1, embedding_dim=4, hidden_dim=4)
    cases = [
        (lm, IDS, IDS, 10.0),
        (RNNTagger(VOCAB, 3, embedding_dim=4, hidden_dim=4), IDS, tags, 6.0),
        (RNNClassifier(VOCAB, 2, embedding_dim=4, hidden_dim=4), IDS, labels, 2.0),
        (Seq2SeqModel(VOCAB, VOCAB, embedding_dim=4, hidden_dim=4), {"source_ids": IDS, "target_in": target_in},
         target_out, 5.0),
    ]
    for model, inputs, targets, count in cases:
        loss_sum, n = model.loss_sum(inputs, targets, training=False)
        assert float(n) == count, type(model).__name__
        assert keras.backend.standardize_dtype(loss_sum.dtype) == "float32" and float(loss_sum) > 0
        assert keras.backend.standardize_dtype(n.dtype) == "float32"
    # The language model also starts from and returns a carried state.
    loss_sum, n, states = lm.loss_sum(IDS, IDS, states=lm.initial_state(2), return_state=True)
    assert len(states) == 1 and float(loss_sum) == pytest.approx(float(lm.loss_sum(IDS, IDS)[0]))
