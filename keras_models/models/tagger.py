"""The sequence tagger: the recurrent encoder backbone (+ character features) → per-token tag scores (→ CRF)."""

from __future__ import annotations

import keras
from keras import ops

from keras_models.layers.recurrent import bidirectional_recurrent, offset_seed
from keras_models.models.backbone import RecurrentEncoder

__all__ = ["RNNTagger"]


@keras.saving.register_keras_serializable(package="rnnflow")
class RNNTagger(keras.Model):
    """A bidirectional recurrent sequence tagger (POS, NER, chunking) over any of our cells.

    The BiLSTM(-CRF) architecture of Huang et al. (2015) and Lample et al. (2016): word embeddings,
    optionally concatenated with a character-level encoding of every word (a bidirectional RNN over
    the word's characters, its final forward and backward outputs concatenated), dropout, stacked
    bidirectional recurrent layers with dropout after each (the :class:`RecurrentEncoder` backbone),
    and a dense layer giving one score per tag and token (the emission scores). With ``use_crf`` the model owns a linear-chain CRF
    (``self.crf``) used by :meth:`loss_sum` and :meth:`predict_tags`; ``call`` returns the emission
    scores either way.

    Token id 0 is padding: padding steps are skipped by the recurrent layers (they change nothing
    at the real steps), contribute nothing to the loss, and are tagged 0 by :meth:`predict_tags`.
    Character id 0 is padding as well, and a word whose characters are all padding gets a zero
    character encoding.

    Args:
        vocab_size: number of word ids (0 = padding).
        num_tags: number of tags.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman), for the word and character encoders.
        num_layers: stacked bidirectional layers.
        embedding_dim: size of the word embeddings.
        hidden_dim: units of each direction of every word-level layer.
        dropout: dropout rate on the word representations, between layers and before the output.
        recurrent_dropout: variational dropout rate on the recurrent state.
        activation: the Elman cell's activation, ``"tanh"`` or ``"relu"`` (ignored by LSTM/GRU).
        char_vocab_size: number of character ids (0 = padding); 0 turns character features off.
        char_embedding_dim: size of the character embeddings.
        char_hidden_dim: units of each direction of the character encoder.
        use_crf: add a CRF layer (``keras_models.layers.crf.CRF``) for the loss and decoding.
        seed: seed for the dropout masks.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        inputs: int tensor ``[batch, time]`` of word ids, or a dict ``{"ids": [batch, time],
            "chars": [batch, time, chars]}``; ``"chars"`` is required exactly when
            ``char_vocab_size > 0``.
        training: whether dropout is active.

    Returns logits ``[batch, time, num_tags]`` (float32 even under mixed precision).

    Example:

    >>> model = RNNTagger(vocab_size=11, num_tags=3, embedding_dim=4, hidden_dim=4)
    >>> ids = np.array([[3, 5, 2, 0, 0]])
    >>> tuple(model(ids).shape)
    (1, 5, 3)
    >>> loss, count = model.loss_sum(ids, np.array([[1, 2, 0, 0, 0]]))
    >>> float(count)
    3.0
    """

    def __init__(
        self,
        vocab_size,
        num_tags,
        cell="lstm",
        num_layers=1,
        embedding_dim=100,
        hidden_dim=100,
        dropout=0.0,
        recurrent_dropout=0.0,
        activation="tanh",
        char_vocab_size=0,
        char_embedding_dim=25,
        char_hidden_dim=25,
        use_crf=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Checks cell and num_layers; makes its layers when they are read below, in this order.
        self.backbone = RecurrentEncoder(
            vocab_size, embedding_dim, cell, hidden_dim, num_layers=num_layers, bidirectional=True,
            dropout=dropout, recurrent_dropout=recurrent_dropout, activation=activation, seed=seed,
        )
        self.vocab_size = vocab_size
        self.num_tags = num_tags
        self.cell = cell
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.activation = activation
        self.char_vocab_size = char_vocab_size
        self.char_embedding_dim = char_embedding_dim
        self.char_hidden_dim = char_hidden_dim
        self.use_crf = use_crf
        self.seed = seed

        self.embedding = self.backbone.embedding
        if char_vocab_size:
            self.char_embedding = keras.layers.Embedding(
                char_vocab_size, char_embedding_dim, name="char_embedding"
            )
            self.char_encoder = bidirectional_recurrent(
                cell, char_hidden_dim, return_sequences=False, seed=offset_seed(seed, 50),
                name=f"char_bi{cell}", **self.backbone.cell_kwargs,
            )
        self.recurrent_layers = self.backbone.recurrent_layers
        # Before every recurrent layer (the backbone's) and before the output layer.
        self.dropouts = [*self.backbone.dropouts, self.backbone.make_dropout(num_layers)]
        self.output_layer = keras.layers.Dense(num_tags, dtype="float32", name="tags")
        if use_crf:
            from keras_models.layers.crf import CRF

            self.crf = CRF(num_tags)
        else:
            self.crf = None

    # -- inputs -----------------------------------------------------------------------------------
    def _split_inputs(self, inputs):
        """``(ids, chars or None)`` from either input form, checking ``chars`` against the config."""
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"ids", "chars"}
            if "ids" not in inputs or unknown:
                raise ValueError(
                    f"RNNTagger takes a dict with keys 'ids' and (with characters) 'chars'; "
                    f"got keys {sorted(inputs)}"
                )
            ids, chars = inputs["ids"], inputs.get("chars")
        else:
            ids, chars = inputs, None
        if self.char_vocab_size and chars is None:
            raise ValueError(
                f"This RNNTagger uses character features (char_vocab_size={self.char_vocab_size}): "
                "call it with {'ids': [batch, time], 'chars': [batch, time, chars]}"
            )
        if not self.char_vocab_size and chars is not None:
            raise ValueError(
                "Got 'chars' but this RNNTagger has no character features (char_vocab_size=0)"
            )
        return ids, chars

    def compute_mask_from(self, inputs):
        """The ``[batch, time]`` boolean mask of real tokens: ``ids != 0``."""
        ids = inputs["ids"] if isinstance(inputs, dict) else inputs
        return ops.not_equal(ops.convert_to_tensor(ids), 0)

    # -- layers -----------------------------------------------------------------------------------
    def build(self, input_shape):
        if isinstance(input_shape, dict):
            ids_shape = tuple(input_shape["ids"])
            chars_shape = input_shape.get("chars")
        else:
            ids_shape, chars_shape = tuple(input_shape), None
        batch, time = ids_shape[0], ids_shape[1]
        features_dim = 0
        if self.char_vocab_size:
            width = None if chars_shape is None else chars_shape[-1]
            self.char_embedding.build((None, width))
            self.char_encoder.build((None, width, self.char_embedding_dim))
            features_dim = 2 * self.char_hidden_dim
        dim = self.backbone.build(ids_shape, features_dim=features_dim)
        self.output_layer.build((batch, time, dim))
        if self.crf is not None and not self.crf.built:
            self.crf.build((batch, time, self.num_tags))
        self.built = True

    def encode_chars(self, chars, training=None):
        """Character features ``[batch, time, 2 * char_hidden_dim]`` from char ids ``[batch, time, chars]``.

        Every word's characters run through the bidirectional character encoder as one row of a
        ``[batch * time, chars, char_embedding_dim]`` batch; the result is the final forward output
        (after the last real character) concatenated with the final backward output (after the
        first). Char id 0 is padding; an all-padding word gets zeros.
        """
        chars = ops.convert_to_tensor(chars)
        if len(chars.shape) != 3:
            raise ValueError(f"'chars' must be [batch, time, chars], got shape {chars.shape}")
        shape = ops.shape(chars)
        width = chars.shape[2] if chars.shape[2] is not None else shape[2]
        flat = ops.reshape(chars, (-1, width))
        encoded = self.char_encoder(
            self.char_embedding(flat), mask=ops.not_equal(flat, 0), training=training
        )
        return ops.reshape(encoded, (shape[0], shape[1], 2 * self.char_hidden_dim))

    def call(self, inputs, training=None):
        ids, chars = self._split_inputs(inputs)
        char_features = self.encode_chars(chars, training=training) if self.char_vocab_size else None
        x = self.backbone(ids, features=char_features, training=training)
        x = self.dropouts[self.num_layers](x, training=training)
        return ops.cast(self.output_layer(x), "float32")

    # -- loss and decoding --------------------------------------------------------------------------
    def loss_sum(self, inputs, tags, training=None):
        """``(summed loss over the scored tokens, number of scored tokens)``, both float32 scalars.

        Without a CRF, the token cross-entropy of the emission scores summed over the real tokens;
        with one, the negative CRF log-likelihood summed over the sequences. Either way the count is
        the number of tokens in the sum, so ``loss / count`` is a per-token loss and sums of both can
        be all-reduced across replicas (see ``keras_models.training``). Tags at padding are ignored
        (any value).

        A gold tag ``>= num_tags`` (a tag unseen in training, kept in valid / test splits) cannot be
        predicted and has no score, so it is left out of the loss and of the count: without a CRF
        that token alone is left out; with a CRF the whole sentence holding it is left out (its
        likelihood needs a complete path of known tags), its loss and all its tokens. Training data
        never holds such tags; with none, the sums are exactly those of the plain formula.
        """
        logits = self(inputs, training=training)
        mask = self.compute_mask_from(inputs)
        tags = ops.cast(tags, "int32")
        scored = ops.logical_and(mask, ops.less(tags, self.num_tags))  # real tokens with a known gold tag
        tags = ops.where(scored, tags, 0)
        if self.crf is not None:
            # A sentence counts only when every real token's tag is known.
            whole = ops.all(ops.logical_or(scored, ops.logical_not(mask)), axis=1)  # [batch]
            count = ops.sum(ops.cast(ops.logical_and(mask, whole[:, None]), "float32"))
            log_likelihood = ops.cast(self.crf.log_likelihood(logits, tags, mask), "float32")
            return -ops.sum(ops.where(whole, log_likelihood, ops.zeros_like(log_likelihood))), count
        count = ops.sum(ops.cast(scored, "float32"))
        xent = keras.losses.sparse_categorical_crossentropy(tags, logits, from_logits=True)
        return ops.sum(ops.where(scored, xent, ops.zeros_like(xent))), count

    def predict_tags(self, inputs):
        """The best tags ``[batch, time]`` int32 (argmax, or Viterbi with a CRF); 0 at padding."""
        logits = self(inputs, training=False)
        mask = self.compute_mask_from(inputs)
        if self.crf is not None:
            tags, _ = self.crf.decode(logits, mask)
        else:
            tags = ops.argmax(logits, axis=-1)
        tags = ops.cast(tags, "int32")
        return ops.where(mask, tags, ops.zeros_like(tags))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "num_tags": self.num_tags,
                "cell": self.cell,
                "num_layers": self.num_layers,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "activation": self.activation,
                "char_vocab_size": self.char_vocab_size,
                "char_embedding_dim": self.char_embedding_dim,
                "char_hidden_dim": self.char_hidden_dim,
                "use_crf": self.use_crf,
                "seed": self.seed,
            }
        )
        return config
