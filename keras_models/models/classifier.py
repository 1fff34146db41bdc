"""The sequence classifier: the recurrent encoder backbone → masked pooling → MLP → class logits."""

from __future__ import annotations

import keras
from keras import ops

from keras_models.layers.pooling import POOLING_MODES, bidirectional_last, masked_pooling
from keras_models.models.backbone import RecurrentEncoder

__all__ = ["RNNClassifier"]


@keras.saving.register_keras_serializable(package="rnnflow")
class RNNClassifier(keras.Model):
    """A recurrent text classifier (sentiment, topic, ...) over any of our cells.

    Word embeddings run through stacked recurrent layers (bidirectional by default; the
    :class:`RecurrentEncoder` backbone), whose output sequence is pooled over the real tokens into one vector per text, then an MLP head (ReLU) and
    a dense layer give the class logits. Dropout is applied to the embeddings, between recurrent
    layers, to the pooled vector and after every hidden MLP layer; ``recurrent_dropout`` adds
    variational dropout on the recurrent state.

    Pooling: ``"last"`` is the recurrent output at the last real token (for a bidirectional
    encoder, the forward output there concatenated with the backward output at the first token,
    where the backward direction has read the whole text; see
    :func:`keras_models.layers.pooling.bidirectional_last`), ``"mean"`` and ``"max"`` pool over the real
    tokens. Token id 0 is padding and never changes a prediction: a padded batch gives every text
    the logits it gets alone.

    Args:
        vocab_size: number of token ids (0 = padding).
        num_classes: number of classes.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman).
        num_layers: stacked recurrent layers.
        embedding_dim: size of the token embeddings.
        hidden_dim: units of every recurrent layer (of each direction when bidirectional).
        bidirectional: use ``keras.layers.Bidirectional`` recurrent layers.
        pooling: ``"last"``, ``"mean"`` or ``"max"``.
        mlp_dims: sizes of the hidden layers of the MLP head (``()`` for none).
        dropout: dropout rate on the non-recurrent connections.
        recurrent_dropout: variational dropout rate on the recurrent state.
        activation: the Elman cell's activation, ``"tanh"`` or ``"relu"`` (ignored by LSTM/GRU).
        seed: seed for the dropout masks.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        ids: int tensor ``[batch, time]`` of token ids, right-padded with 0.
        training: whether dropout is active.

    Returns logits ``[batch, num_classes]`` (float32 even under mixed precision).

    Example:

    >>> model = RNNClassifier(vocab_size=11, num_classes=2, embedding_dim=4, hidden_dim=4,
    ...                       pooling="mean", mlp_dims=[8])
    >>> tuple(model(np.array([[3, 5, 2, 0, 0]])).shape)
    (1, 2)
    """

    def __init__(
        self,
        vocab_size,
        num_classes,
        cell="lstm",
        num_layers=1,
        embedding_dim=100,
        hidden_dim=100,
        bidirectional=True,
        pooling="last",
        mlp_dims=(),
        dropout=0.0,
        recurrent_dropout=0.0,
        activation="tanh",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Checks cell and num_layers; makes its layers when they are read below, in this order.
        self.backbone = RecurrentEncoder(
            vocab_size, embedding_dim, cell, hidden_dim, num_layers=num_layers, bidirectional=bidirectional,
            dropout=dropout, recurrent_dropout=recurrent_dropout, activation=activation, seed=seed,
        )
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.cell = cell
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.mlp_dims = [int(d) for d in mlp_dims]
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.activation = activation
        self.seed = seed

        self.embedding = self.backbone.embedding
        self.recurrent_layers = self.backbone.recurrent_layers
        # Before every recurrent layer (the backbone's), on the pooled vector, after every hidden MLP layer.
        self.dropouts = [
            *self.backbone.dropouts,
            *(self.backbone.make_dropout(num_layers + i) for i in range(1 + len(self.mlp_dims))),
        ]
        self.mlp_layers = [
            keras.layers.Dense(d, activation="relu", name=f"mlp_{i}") for i, d in enumerate(self.mlp_dims)
        ]
        self.output_layer = keras.layers.Dense(num_classes, dtype="float32", name="logits")

    @property
    def encoding_dim(self):
        """Size of the pooled vector: ``hidden_dim``, doubled when bidirectional."""
        return self.backbone.output_dim

    def build(self, input_shape):
        batch = input_shape[0]
        dim = self.backbone.build(input_shape)
        for layer in self.mlp_layers:
            layer.build((batch, dim))
            dim = layer.units
        self.output_layer.build((batch, dim))
        self.built = True

    def encode(self, ids, training=None):
        """The pooled text encoding ``[batch, encoding_dim]`` (before dropout and the MLP head)."""
        mask = ops.not_equal(ids, 0)
        x = self.backbone(ids, training=training)
        if self.pooling == "last" and self.bidirectional:
            return bidirectional_last(x, mask, self.hidden_dim)
        return masked_pooling(x, mask, self.pooling)

    def call(self, ids, training=None):
        x = self.encode(ids, training=training)
        x = self.dropouts[self.num_layers](x, training=training)
        for i, layer in enumerate(self.mlp_layers):
            x = layer(x)
            x = self.dropouts[self.num_layers + 1 + i](x, training=training)
        return ops.cast(self.output_layer(x), "float32")

    def loss_sum(self, ids, labels, training=None):
        """``(summed cross-entropy over the scored texts, number of scored texts)``, both float32 scalars.

        Args:
            ids: ``[batch, time]`` int token ids, right-padded with 0.
            labels: ``[batch]`` int gold class ids.
            training: whether dropout is active.

        ``loss / count`` is the per-text loss; sums of both can be all-reduced across replicas (see
        ``keras_models.training``). A gold label ``>= num_classes`` (a label unseen in training, kept
        in valid / test splits) cannot be predicted and has no score: that text is left out of the
        sum and of the count. Training data never holds such labels; with none, the sums are exactly
        those of the plain formula.
        """
        logits = self(ids, training=training)
        labels = ops.convert_to_tensor(labels)
        scored = ops.less(labels, self.num_classes)
        xent = keras.losses.sparse_categorical_crossentropy(ops.where(scored, labels, 0), logits, from_logits=True)
        xent = ops.cast(xent, "float32")
        return ops.sum(ops.where(scored, xent, ops.zeros_like(xent))), ops.sum(ops.cast(scored, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "num_classes": self.num_classes,
                "cell": self.cell,
                "num_layers": self.num_layers,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "bidirectional": self.bidirectional,
                "pooling": self.pooling,
                "mlp_dims": list(self.mlp_dims),
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "activation": self.activation,
                "seed": self.seed,
            }
        )
        return config
