"""The recurrent language model: embedding → stacked recurrent layers → softmax over the vocabulary."""

from __future__ import annotations

import keras
from keras import ops

from keras_models.cells import get_cell
from keras_models.recurrent import Recurrent


@keras.saving.register_keras_serializable(package="rnnflow")
class RNNLanguageModel(keras.Model):
    """A word- or character-level recurrent language model over any of our cells.

    Dropout follows Zaremba et al. (2014): on the embeddings, between layers and before the softmax
    (the non-recurrent connections); ``recurrent_dropout`` adds variational dropout on the hidden
    state (Gal & Ghahramani, 2016). With ``tie_weights`` the softmax reuses the embedding matrix
    (Press & Wolf, 2017; Inan et al., 2017), which needs ``embedding_dim == hidden_dim``.

    Args:
        vocab_size: number of token ids (the vocabulary's size, reserved ids included).
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman).
        num_layers: stacked recurrent layers.
        embedding_dim: size of the token embeddings.
        hidden_dim: units of every recurrent layer.
        tie_weights: share the embedding matrix with the output projection.
        dropout: dropout rate on the non-recurrent connections.
        recurrent_dropout: variational dropout rate on the recurrent state.
        activation: the Elman cell's activation, ``"tanh"`` or ``"relu"`` (ignored by LSTM/GRU).
        seed: seed for the dropout masks.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        ids: int tensor ``[batch, time]`` of token ids.
        training: whether dropout is active.

    ``call`` starts from a zero state and returns logits ``[batch, time, vocab]`` (float32 even under
    mixed precision). :meth:`forward` takes and returns the recurrent state, for truncated BPTT and
    generation.

    Example:

    >>> model = RNNLanguageModel(vocab_size=11, cell="gru", num_layers=1, embedding_dim=4, hidden_dim=4)
    >>> logits, states = model.forward(ops.zeros((2, 5), "int32"))
    >>> tuple(logits.shape)
    (2, 5, 11)
    """

    def __init__(
        self,
        vocab_size,
        cell="lstm",
        num_layers=2,
        embedding_dim=200,
        hidden_dim=200,
        tie_weights=False,
        dropout=0.0,
        recurrent_dropout=0.0,
        activation="tanh",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if tie_weights and embedding_dim != hidden_dim:
            raise ValueError(
                f"tie_weights needs embedding_dim == hidden_dim (got {embedding_dim} and {hidden_dim})"
            )
        if not isinstance(cell, str):
            raise TypeError("cell must be one of 'lstm', 'gru', 'rnn' so that the model can be saved")
        self.vocab_size = vocab_size
        self.cell = cell
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.tie_weights = tie_weights
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.activation = activation
        self.seed = seed

        cell_kwargs = {"recurrent_dropout": recurrent_dropout}
        if cell == "rnn":
            cell_kwargs["activation"] = activation
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.recurrent_layers = [
            Recurrent(
                get_cell(cell, hidden_dim, seed=None if seed is None else seed + i, **cell_kwargs),
                return_sequences=True,
                return_state=True,
                name=f"{cell}_{i}",
            )
            for i in range(num_layers)
        ]
        self.dropouts = [
            keras.layers.Dropout(dropout, seed=None if seed is None else seed + 100 + i, name=f"dropout_{i}")
            for i in range(num_layers + 1)
        ]
        if not tie_weights:
            self.output_layer = keras.layers.Dense(vocab_size, name="softmax")

    def build(self, input_shape):
        batch = input_shape[0]
        self.embedding.build(input_shape)
        shape = (batch, input_shape[1], self.embedding_dim)
        for layer in self.recurrent_layers:
            layer.build(shape)
            shape = (batch, input_shape[1], self.hidden_dim)
        if self.tie_weights:
            self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="softmax_bias")
        else:
            self.output_layer.build(shape)
        self.built = True

    @property
    def state_sizes(self) -> list[list[int]]:
        """Per layer, the sizes of its state tensors (``[h, c]`` for LSTM, ``[h]`` otherwise)."""
        sizes = []
        for layer in self.recurrent_layers:
            size = layer.cell.state_size
            sizes.append(list(size) if isinstance(size, (list, tuple)) else [size])
        return sizes

    def initial_state(self, batch_size: int):
        """A zero state for ``batch_size`` rows: per layer, a list of ``[batch, units]`` tensors."""
        dtype = self.compute_dtype
        return [[ops.zeros((batch_size, n), dtype=dtype) for n in sizes] for sizes in self.state_sizes]

    def forward(self, ids, states=None, training=None):
        """Logits ``[batch, time, vocab]`` (float32) and the final state, starting from ``states``."""
        x = self.embedding(ids)
        x = self.dropouts[0](x, training=training)
        new_states = []
        for i, layer in enumerate(self.recurrent_layers):
            initial = None if states is None else list(states[i])
            out = layer(x, initial_state=initial, training=training)
            x, layer_states = out[0], list(out[1:])
            new_states.append(layer_states)
            x = self.dropouts[i + 1](x, training=training)
        if self.tie_weights:
            kernel = ops.cast(self.embedding.embeddings, x.dtype)
            logits = ops.matmul(x, ops.transpose(kernel)) + ops.cast(self.output_bias, x.dtype)
        else:
            logits = self.output_layer(x)
        return ops.cast(logits, "float32"), new_states

    def call(self, ids, training=None):
        logits, _ = self.forward(ids, training=training)
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "cell": self.cell,
                "num_layers": self.num_layers,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "tie_weights": self.tie_weights,
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "activation": self.activation,
                "seed": self.seed,
            }
        )
        return config
