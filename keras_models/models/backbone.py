"""The shared encoder backbone: token embedding → stacked (bi)recurrent layers, dropout before each.

The tagger, the classifier and the seq2seq encoder all read their tokens the same way, in the
keras-hub manner of one backbone under several task heads: a :class:`RecurrentEncoder` makes and
runs the embedding and the recurrent stack, and each model adds its head (per-token tag scores and
a CRF, pooling and an MLP, a bridge and an attentional decoder).

The backbone is a plain object, not a Keras layer: the model that owns it holds its layers under
the model's own attribute names (``embedding``, ``recurrent_layers``, ``dropouts`` or
``source_embedding``, ``encoder_rnns``, ``encoder_dropouts``). That keeps the variable layout of a
saved ``.keras`` file, the order of ``model.variables`` (which positional checkpoints rely on) and
the layer names exactly as they were before the backbone existed, so earlier saved models and
checkpoints still load.
"""

from __future__ import annotations

from functools import cached_property

import keras

from keras_models.layers.cells import get_cell, model_cell_arguments
from keras_models.layers.recurrent import Recurrent, bidirectional_recurrent, offset_seed

__all__ = ["RecurrentEncoder"]


class RecurrentEncoder:
    """Embedding → ``num_layers`` × (dropout → recurrent layer of ``cell`` cells), masked at padding.

    Token id 0 is padding: padding steps are skipped by the recurrent layers and output zeros.
    Layer ``i``'s cells are seeded with ``seed + 2 * i`` (``seed + 2 * i + 1`` for the backward
    direction) and its dropout with ``seed + 100 + i``; :meth:`make_dropout` continues that
    numbering for a head's own dropout layers.

    The layers are made when first read (``embedding``, ``recurrent_layers``, ``dropouts``), so a
    model that reads them in its own order, interleaving its own layers, fixes the order in which
    they are made: unseeded Keras initializers draw their seeds from the global RNG when they are
    made, so that order decides the initial weights under ``keras.utils.set_random_seed``.

    Args:
        vocab_size: number of token ids (0 = padding).
        embedding_dim: size of the token embeddings.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman); checked by
            :func:`keras_models.layers.cells.model_cell_arguments`.
        hidden_dim: units of every recurrent layer (of each direction when bidirectional).
        num_layers: stacked recurrent layers (at least 1).
        bidirectional: ``keras.layers.Bidirectional`` layers (forward and backward outputs
            concatenated) instead of forward ones.
        dropout: dropout rate on the input of every recurrent layer.
        recurrent_dropout: variational dropout rate on the recurrent state.
        activation: the Elman cell's activation (ignored by LSTM/GRU).
        seed: seed of the dropout masks (``None``: unseeded).
        prefix: prefix of the recurrent and dropout layer names (``"encoder_"``:
            ``encoder_bilstm_0``, ``encoder_dropout_0``).
        embedding_name: name of the embedding layer.

    Call arguments:
        ids: int tensor ``[batch, time]``, right-padded with 0.
        features: optional ``[batch, time, F]`` features concatenated to the embeddings (the
            tagger's character encoding); give ``features_dim=F`` to :meth:`build`.
        training: whether dropout is active.

    Returns ``[batch, time, output_dim]`` (zeros at padding).

    Example:

    >>> encoder = RecurrentEncoder(11, 4, "gru", 4, num_layers=2)
    >>> encoder.build((None, None))
    8
    >>> tuple(encoder(np.array([[3, 5, 2, 0]])).shape)
    (1, 4, 8)
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim,
        cell,
        hidden_dim,
        num_layers=1,
        bidirectional=True,
        dropout=0.0,
        recurrent_dropout=0.0,
        activation="tanh",
        seed=None,
        prefix="",
        embedding_name="embedding",
    ):
        self.cell_kwargs = model_cell_arguments(cell, recurrent_dropout, activation)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.cell = cell
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.seed = seed
        self.prefix = prefix
        self.embedding_name = embedding_name

    # -- layers (made when first read) -----------------------------------------------------------
    @cached_property
    def embedding(self) -> keras.layers.Embedding:
        return keras.layers.Embedding(self.vocab_size, self.embedding_dim, name=self.embedding_name)

    @cached_property
    def recurrent_layers(self) -> list[keras.layers.Layer]:
        return [self._make_recurrent(i) for i in range(self.num_layers)]

    @cached_property
    def dropouts(self) -> list[keras.layers.Dropout]:
        """The dropout before each recurrent layer."""
        return [self.make_dropout(i) for i in range(self.num_layers)]

    def _make_recurrent(self, i):
        seed = offset_seed(self.seed, 2 * i)
        if self.bidirectional:
            return bidirectional_recurrent(
                self.cell, self.hidden_dim, seed=seed, name=f"{self.prefix}bi{self.cell}_{i}", **self.cell_kwargs
            )
        return Recurrent(
            get_cell(self.cell, self.hidden_dim, seed=seed, **self.cell_kwargs),
            return_sequences=True,
            zero_output_for_mask=True,
            name=f"{self.prefix}{self.cell}_{i}",
        )

    def make_dropout(self, i, rate=None):
        """Dropout layer number ``i`` (seed ``seed + 100 + i``); ``i >= num_layers`` are a head's own."""
        rate = self.dropout if rate is None else rate
        return keras.layers.Dropout(rate, seed=offset_seed(self.seed, 100 + i), name=f"{self.prefix}dropout_{i}")

    @property
    def output_dim(self) -> int:
        """Features of every output step: ``hidden_dim``, doubled when bidirectional."""
        return 2 * self.hidden_dim if self.bidirectional else self.hidden_dim

    # -- building and running --------------------------------------------------------------------
    def build(self, ids_shape, features_dim=0) -> int:
        """Builds the embedding for ``ids_shape`` and the recurrent stack; returns :attr:`output_dim`."""
        ids_shape = tuple(ids_shape)
        batch, time = ids_shape[0], ids_shape[1]
        self.embedding.build(ids_shape)
        dim = self.embedding_dim + features_dim
        for layer in self.recurrent_layers:
            layer.build((batch, time, dim))
            dim = self.output_dim
        return dim

    def encode(self, x, mask, training=None):
        """Runs the recurrent stack (dropout before each layer) over ``x`` ``[batch, time, D]``."""
        for dropout, layer in zip(self.dropouts, self.recurrent_layers):
            x = dropout(x, training=training)
            x = layer(x, mask=mask, training=training)
        return x

    def __call__(self, ids, features=None, training=None):
        x = self.embedding(ids)
        if features is not None:
            x = keras.ops.concatenate([x, keras.ops.cast(features, x.dtype)], axis=-1)
        return self.encode(x, keras.ops.not_equal(ids, 0), training=training)
