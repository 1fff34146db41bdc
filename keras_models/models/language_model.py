"""The recurrent language model: embedding → stacked recurrent layers → softmax over the vocabulary."""

from __future__ import annotations

import keras
from keras import ops

from keras_models.layers.cells import get_cell, model_cell_arguments
from keras_models.layers.recurrent import Recurrent, offset_seed


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
    generation; :meth:`loss_sum` is the summed next-token loss and the target count (optionally from
    and with a carried state), the loss contract every rnnflow model shares.

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
        cell_kwargs = model_cell_arguments(cell, recurrent_dropout, activation)
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

        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.recurrent_layers = [
            Recurrent(
                get_cell(cell, hidden_dim, seed=offset_seed(seed, i), **cell_kwargs),
                return_sequences=True,
                return_state=True,
                name=f"{cell}_{i}",
            )
            for i in range(num_layers)
        ]
        self.dropouts = [
            keras.layers.Dropout(dropout, seed=offset_seed(seed, 100 + i), name=f"dropout_{i}")
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

    def loss_sum(self, ids, targets, training=None, states=None, return_state=False):
        """``(summed cross-entropy over every target, number of targets)``, both float32 scalars.

        Args:
            ids: ``[batch, time]`` int input token ids.
            targets: ``[batch, time]`` int next tokens; every position counts.
            training: whether dropout is active.
            states: the state to start from (:meth:`initial_state`, or a previous window's final
                state for truncated BPTT); zeros when omitted.
            return_state: also return the final state, ``(loss_sum, count, states)``.

        ``loss / count`` is the per-token loss; sums of both can be all-reduced across replicas (see
        ``keras_models.training``).
        """
        logits, new_states = self.forward(ids, states, training=training)
        xent = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        loss_sum = ops.sum(xent)
        count = ops.cast(ops.size(targets), "float32")
        return (loss_sum, count, new_states) if return_state else (loss_sum, count)

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
