"""The attentional encoder-decoder: BiRNN encoder → bridge → Luong decoder with input feeding → logits.

The architecture of Luong, Pham & Manning (2015) over any of our cells, with a bidirectional encoder
as in Bahdanau et al. (2015):

- **Encoder**: source embeddings → stacked bidirectional recurrent layers (the shared backbone,
  :class:`keras_models.models.backbone.RecurrentEncoder`) → the memory ``[B, S, 2H]`` attended over
  (zeros at padding). The last real forward output and the backward output at position 0 (the two
  directions' final hidden states) are concatenated ``[B, 2H]``.
- **Bridge**: ``Dense(tanh)`` of that summary gives every decoder layer its initial state(s)
  (``h`` and ``c`` for LSTM).
- **Decoder**, one step per target token: the input ``[embedding(y_{t-1}); h̃_{t-1}]`` (input
  feeding: the previous attentional vector) runs through the stacked cells (``cell.step`` on
  ``cell.project_inputs`` of the step's input); the top output ``h_t`` is the query of the global
  attention (:class:`keras_models.layers.attention.Attention`) over the memory, masked at source padding,
  giving the context ``c_t``; ``h̃_t = tanh(W_c [c_t; h_t])`` and the logits are
  ``Dense(target_vocab_size)(h̃_t)``.

Training is teacher forcing (``call``: the gold previous token at every step, one
``tf.while_loop`` over the target time, XLA-compatible), optionally with scheduled sampling
(Bengio et al. 2015). Inference uses :meth:`Seq2SeqModel.decode_step` one step at a time, e.g.
through :meth:`Seq2SeqModel.step_fn` for greedy or beam search.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_models.layers.attention import SCORES, Attention
from keras_models.layers.cells import get_cell, model_cell_arguments
from keras_models.layers.recurrent import offset_seed
from keras_models.models.backbone import RecurrentEncoder
from preprocessing.vocab import BOS_ID, EOS_ID, PAD_ID

__all__ = ["Seq2SeqModel", "BOS_ID", "EOS_ID", "PAD_ID"]



@keras.saving.register_keras_serializable(package="rnnflow")
class Seq2SeqModel(keras.Model):
    """An attentional recurrent encoder-decoder (Luong et al. 2015, with a bidirectional encoder).

    Token id 0 is padding in both vocabularies: padding source positions are skipped by the encoder
    and get attention weight exactly 0 (appending padding changes nothing), and padding target
    positions are left out of :meth:`loss_sum`. The target sequences of a batch are
    ``target_in = [<bos>, y_1, ..., y_n]`` and ``target_out = [y_1, ..., y_n, <eos>]``, right-padded
    (``BOS_ID = 2``, ``EOS_ID = 3`` from ``preprocessing.vocab``).

    Dropout (seeded by ``seed``): ``dropout`` on the source and target embeddings, between stacked
    encoder layers, between stacked decoder layers (the cells' input masks, one per sequence) and on
    the attentional vector ``h̃`` (fed to the output layer and, with input feeding, to the next
    step); a fresh mask per time step except between decoder layers. ``recurrent_dropout`` is
    variational dropout on the recurrent state of every encoder and decoder cell (one mask per
    sequence, Gal & Ghahramani 2016).

    Args:
        source_vocab_size: number of source token ids (0 = padding).
        target_vocab_size: number of target token ids (0 = padding, 2 = ``<bos>``, 3 = ``<eos>``).
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (Elman), for the encoder and the decoder.
        encoder_layers: stacked bidirectional encoder layers.
        decoder_layers: stacked decoder cells.
        embedding_dim: size of the source and the target embeddings.
        hidden_dim: units of each encoder direction (the memory has ``2 * hidden_dim`` features),
            and of the decoder unless ``decoder_dim`` is given.
        decoder_dim: units of the decoder cells and of ``h̃`` (default ``hidden_dim``);
            ``attention="dot"`` needs ``decoder_dim = 2 * hidden_dim``.
        attention: the score, ``"additive"`` (Bahdanau / Luong *concat*), ``"bilinear"``
            (Luong *general*) or ``"dot"``.
        attention_units: hidden units of the additive score (default ``hidden_dim``).
        input_feeding: feed ``h̃_{t-1}`` to the first decoder layer with the embedding.
        dropout: dropout rate (see above).
        recurrent_dropout: variational dropout rate on the recurrent states.
        activation: the Elman cell's activation, ``"tanh"`` or ``"relu"`` (ignored by LSTM/GRU).
        sampling_probability: scheduled sampling: in training, at every step after the first, each
            sequence is fed the model's own previous argmax instead of the gold token with this
            probability (0: pure teacher forcing). ``call`` and :meth:`loss_sum` take an override
            (a float or a scalar tensor, e.g. from a schedule, which avoids retracing).
        seed: seed for the dropout masks and the scheduled-sampling draws.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        inputs: dict ``{"source_ids": [batch, S], "target_in": [batch, T]}`` of int ids.
        training: whether dropout (and scheduled sampling) is active.
        sampling_probability: optional override of the attribute of the same name.

    Returns logits ``[batch, T, target_vocab_size]`` (float32 even under mixed precision), the
    prediction of ``target_out`` under teacher forcing.

    Step-wise decoding and search. :meth:`encode` runs the encoder once;
    :meth:`initial_decoder_state` gives the decoder's start state and :meth:`decode_step` advances
    it by one token. For a generic search written against ``step_fn(tokens [N], state) ->
    (logits [N, V], new_state)``, whose ``state`` is a nest of tensors with leading dimension
    ``N`` that the search tiles (beams) and gathers (beam reordering):
    ``state = model.search_state(model.encode(source_ids))`` puts the decoder state *and* the
    per-row encoder tensors (``memory``, ``mask`` and, except for the dot score, ``prepared_keys``)
    into one dict, so they are tiled and gathered together with the recurrent state, and
    ``model.step_fn()`` is the matching step function (inference mode, float32 logits; it returns
    the encoder tensors unchanged).

    Example:

    >>> model = Seq2SeqModel(source_vocab_size=20, target_vocab_size=15, embedding_dim=8, hidden_dim=8)
    >>> source = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    >>> target_in = np.array([[2, 4, 5], [2, 6, 0]])     # <bos> y_1 y_2
    >>> target_out = np.array([[4, 5, 3], [6, 3, 0]])    # y_1 y_2 <eos>
    >>> tuple(model({"source_ids": source, "target_in": target_in}).shape)
    (2, 3, 15)
    >>> loss, count = model.loss_sum({"source_ids": source, "target_in": target_in}, target_out)
    >>> float(count)
    5.0
    >>> state = model.search_state(model.encode(source))          # greedy decoding by hand
    >>> step = model.step_fn()
    >>> tokens = np.full([2], BOS_ID)
    >>> for _ in range(5):
    ...     logits, state = step(tokens, state)
    ...     tokens = ops.argmax(logits, axis=-1)
    """

    def __init__(
        self,
        source_vocab_size,
        target_vocab_size,
        cell="lstm",
        encoder_layers=2,
        decoder_layers=1,
        embedding_dim=64,
        hidden_dim=128,
        decoder_dim=None,
        attention="additive",
        attention_units=None,
        input_feeding=True,
        dropout=0.0,
        recurrent_dropout=0.0,
        activation="tanh",
        sampling_probability=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        cell_kwargs = model_cell_arguments(cell, recurrent_dropout, activation)
        if encoder_layers < 1 or decoder_layers < 1:
            raise ValueError(
                "encoder_layers and decoder_layers must be at least 1, got "
                f"{encoder_layers} and {decoder_layers}"
            )
        if attention not in SCORES:
            raise ValueError(f"attention must be one of {SCORES}, got {attention!r}")
        decoder_units = hidden_dim if decoder_dim is None else decoder_dim
        if attention == "dot" and decoder_units != 2 * hidden_dim:
            raise ValueError(
                f"attention='dot' needs the decoder size to equal the memory size 2 * hidden_dim = "
                f"{2 * hidden_dim}, got decoder_dim={decoder_units}: pass decoder_dim={2 * hidden_dim} "
                "or use attention='bilinear' or 'additive'"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not 0.0 <= float(sampling_probability) <= 1.0:
            raise ValueError(f"sampling_probability must be in [0, 1], got {sampling_probability!r}")
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.cell = cell
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.decoder_dim = decoder_dim
        self.decoder_units = decoder_units
        self.attention_score = attention
        self.attention_units = attention_units
        self.input_feeding = input_feeding
        self.dropout = float(dropout)
        self.recurrent_dropout = recurrent_dropout
        self.activation = activation
        self.sampling_probability = float(sampling_probability)
        self.seed = seed

        # Encoder: the shared backbone, its layers made in this order.
        self.backbone = RecurrentEncoder(
            source_vocab_size, embedding_dim, cell, hidden_dim, num_layers=encoder_layers, bidirectional=True,
            dropout=self.dropout, recurrent_dropout=recurrent_dropout, activation=activation, seed=seed,
            prefix="encoder_", embedding_name="source_embedding",
        )
        self.source_embedding = self.backbone.embedding
        self.encoder_dropouts = self.backbone.dropouts
        self.encoder_rnns = self.backbone.recurrent_layers
        # Decoder cells, and the bridge: one Dense for all their initial state tensors.
        self.decoder_cells = [
            get_cell(
                cell,
                decoder_units,
                dropout=self.dropout if i > 0 else 0.0,  # layer 0's input is dropped by hand
                seed=offset_seed(seed, 200 + i),
                name=f"decoder_{cell}_{i}",
                **cell_kwargs,
            )
            for i in range(decoder_layers)
        ]
        self.bridge = keras.layers.Dense(
            decoder_units * sum(self._state_counts()), activation="tanh", name="bridge"
        )
        # Decoder input and output.
        self.target_embedding = keras.layers.Embedding(
            target_vocab_size, embedding_dim, name="target_embedding"
        )
        self.attention = Attention(
            attention,
            units=(attention_units or hidden_dim) if attention == "additive" else None,
            name="attention",
        )
        self.attentional_layer = keras.layers.Dense(
            decoder_units, activation="tanh", use_bias=False, name="attentional"
        )
        self.output_layer = keras.layers.Dense(target_vocab_size, dtype="float32", name="logits")
        self.seed_generator = keras.random.SeedGenerator(offset_seed(seed, 300), name="seed_generator")
        # Every shape is known from the arguments: build now, so that encode / decode_step work
        # before any call and loading restores the weights directly.
        self.build()

    # -- building -------------------------------------------------------------------------------
    def _state_counts(self):
        counts = []
        for cell in self.decoder_cells:
            size = cell.state_size
            counts.append(len(size) if isinstance(size, (list, tuple)) else 1)
        return counts

    def build(self, input_shape=None):
        if self.built:
            return
        dim = self.backbone.build((None, None))
        self.bridge.build((None, dim))
        self.target_embedding.build((None,))
        units = self.decoder_units
        input_dim = self.embedding_dim + (units if self.input_feeding else 0)
        for cell in self.decoder_cells:
            cell.build((None, input_dim))
            input_dim = units
        self.attention.build((None, units), (None, None, dim))
        self.attentional_layer.build((None, dim + units))
        self.output_layer.build((None, units))
        self.built = True

    # -- encoder --------------------------------------------------------------------------------
    def encode(self, source_ids, training=None):
        """Runs the encoder once over a batch of sources.

        Args:
            source_ids: ``[batch, S]`` int ids, right-padded with 0.
            training: whether dropout is active.

        Returns:
            dict with ``"memory"`` ``[batch, S, 2 * hidden_dim]`` (zeros at padding), ``"mask"``
            ``[batch, S]`` bool (True at real tokens), ``"prepared_keys"`` (the memory's key
            projection, :meth:`Attention.prepare_keys`, computed once here) and ``"state"``
            ``[batch, 2 * hidden_dim]`` (the last layer's final forward and backward hidden
            states, the input of the bridge).
        """
        source_ids = ops.convert_to_tensor(source_ids)
        mask = ops.not_equal(source_ids, PAD_ID)
        memory = self.backbone.encode(self.source_embedding(source_ids), mask, training=training)
        h = self.hidden_dim
        # The forward direction's final state is its output at the last real position (0 for
        # an empty source, whose memory is all zeros); the backward one is at position 0.
        last = ops.maximum(ops.sum(ops.cast(mask, "int32"), axis=1) - 1, 0)
        forward = ops.take_along_axis(memory[:, :, :h], last[:, None, None], axis=1)[:, 0]
        backward = memory[:, 0, h:]
        return {
            "memory": memory,
            "mask": mask,
            "prepared_keys": self.attention.prepare_keys(memory),
            "state": ops.concatenate([forward, backward], axis=-1),
        }

    def initial_decoder_state(self, encoded):
        """The decoder's state before the first target token.

        Args:
            encoded: the result of :meth:`encode` (only ``"state"`` is read).

        Returns:
            dict ``{"layers": [[h, c] or [h] per decoder layer], "attentional": h̃_0}``: the cell
            states from the bridge and zeros for the previous attentional vector, every tensor
            ``[batch, decoder_dim]`` in the compute dtype.
        """
        bridged = self.bridge(encoded["state"])
        parts = ops.split(bridged, sum(self._state_counts()), axis=-1)
        layers, start = [], 0
        for count in self._state_counts():
            layers.append(list(parts[start : start + count]))
            start += count
        return {"layers": layers, "attentional": ops.zeros_like(parts[0])}

    # -- decoder --------------------------------------------------------------------------------
    def dropout_masks(self, batch_size, training=False, steps=None):
        """Dropout masks for the decoder of ``batch_size`` sequences.

        Args:
            batch_size: int or scalar tensor.
            training: Python bool; no masks outside training.
            steps: None for the masks of one step; an int (or scalar tensor) for ``[steps, batch,
                ...]`` embedding and attentional masks (a fresh mask per step).

        Returns:
            dict ``{"embedding": [(steps,) batch, embedding_dim] or None, "attentional":
            [(steps,) batch, decoder_dim] or None, "cells": [(input_mask, recurrent_mask) per
            decoder layer]}``; the cells' masks are per sequence (``cell.get_dropout_masks``).
        """
        dtype = self.compute_dtype
        lead = (batch_size,) if steps is None else (steps, batch_size)
        embedding = attentional = None
        if training and self.dropout > 0:
            embedding = keras.random.dropout(
                ops.ones((*lead, self.embedding_dim), dtype), self.dropout, seed=self.seed_generator
            )
            attentional = keras.random.dropout(
                ops.ones((*lead, self.decoder_units), dtype), self.dropout, seed=self.seed_generator
            )
        cells = [cell.get_dropout_masks(batch_size, bool(training), dtype) for cell in self.decoder_cells]
        return {"embedding": embedding, "attentional": attentional, "cells": cells}

    def _core_step(self, embedded, state, encoded, training, masks, weights=None):
        """One decoder step from the (dropped) embeddings of the previous tokens.

        Returns ``(h̃_t, new_state, attention_weights)``; ``masks`` holds this step's masks (see
        :meth:`dropout_masks`), ``weights`` the cells' ``recurrent_weights()`` read once.
        """
        x = embedded
        if self.input_feeding:
            x = ops.concatenate([x, ops.cast(state["attentional"], x.dtype)], axis=-1)
        new_layers = []
        for i, cell in enumerate(self.decoder_cells):
            input_mask, recurrent_mask = masks["cells"][i]
            if input_mask is not None:
                x = x * input_mask
            x, cell_state = cell.step(
                cell.project_inputs(x),
                list(state["layers"][i]),
                training=training,
                recurrent_mask=recurrent_mask,
                weights=None if weights is None else weights[i],
            )
            new_layers.append(list(cell_state))
        context, attention = self.attention(
            x, encoded["memory"], mask=encoded["mask"], prepared=encoded.get("prepared_keys")
        )
        attentional = self.attentional_layer(ops.concatenate([ops.cast(context, x.dtype), x], axis=-1))
        if masks["attentional"] is not None:
            attentional = attentional * masks["attentional"]
        return attentional, {"layers": new_layers, "attentional": attentional}, attention

    def decode_step(self, prev_tokens, state, encoded, training=None, dropout_masks=None):
        """One decoder step: the next-token logits given the previous tokens.

        Args:
            prev_tokens: ``[N]`` int, the previous target token of every row (``BOS_ID`` first).
            state: the decoder state, from :meth:`initial_decoder_state` or the previous step.
            encoded: dict with ``"memory"`` ``[N, S, 2H]``, ``"mask"`` ``[N, S]`` and optionally
                ``"prepared_keys"`` (from :meth:`encode`, or a :meth:`search_state`; without
                ``"prepared_keys"`` the keys are projected at this step).
            training: whether dropout is active (fresh masks at every call unless
                ``dropout_masks`` is given).
            dropout_masks: optional masks of one step, as from :meth:`dropout_masks`.

        Returns:
            ``(logits [N, target_vocab_size] float32, new_state, attention_weights [N, S] float32)``.
        """
        training = bool(training)
        prev_tokens = ops.cast(prev_tokens, "int32")
        if dropout_masks is None:
            dropout_masks = self.dropout_masks(ops.shape(prev_tokens)[0], training)
        embedded = self.target_embedding(prev_tokens)
        if dropout_masks["embedding"] is not None:
            embedded = embedded * dropout_masks["embedding"]
        attentional, new_state, attention = self._core_step(
            embedded, state, encoded, training, dropout_masks
        )
        return ops.cast(self.output_layer(attentional), "float32"), new_state, attention

    # -- search interface -----------------------------------------------------------------------
    def search_state(self, encoded):
        """The initial ``state`` nest for :meth:`step_fn` (greedy / beam search).

        Args:
            encoded: the result of :meth:`encode` (usually with ``training=False``).

        Returns:
            dict ``{"decoder": initial_decoder_state(encoded), "memory": [N, S, 2H], "mask":
            [N, S] bool}`` plus ``"prepared_keys"`` except for the dot score (whose prepared keys
            are the memory). Every tensor has the leading dimension ``N`` (the batch), so a search
            may tile and gather the whole nest.
        """
        state = {
            "decoder": self.initial_decoder_state(encoded),
            "memory": encoded["memory"],
            "mask": encoded["mask"],
        }
        if self.attention_score != "dot":
            state["prepared_keys"] = encoded["prepared_keys"]
        return state

    def step_fn(self):
        """A function ``(tokens [N] int, state) -> (logits [N, V] float32, new_state)``.

        ``state`` is a :meth:`search_state` nest (possibly tiled / gathered along its leading
        dimension); ``new_state`` has the same structure, with the decoder state advanced and the
        encoder tensors passed through. Inference mode (no dropout).

        Example:

        >>> state = model.search_state(model.encode(source_ids))
        >>> logits, state = model.step_fn()(np.full([len(source_ids)], BOS_ID), state)
        """

        def step(tokens, state):
            logits, decoder_state, _ = self.decode_step(tokens, state["decoder"], state, training=False)
            new_state = dict(state)
            new_state["decoder"] = decoder_state
            return logits, new_state

        return step

    # -- teacher forcing ------------------------------------------------------------------------
    @staticmethod
    def _split_inputs(inputs):
        if not isinstance(inputs, dict) or set(inputs) != {"source_ids", "target_in"}:
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                f"Seq2SeqModel takes a dict with keys 'source_ids' and 'target_in', got {got}"
            )
        return inputs["source_ids"], inputs["target_in"]

    def _teacher_forcing(self, inputs, training, sampling_probability, return_attention):
        """``(logits [B, T, V] float32, attention [B, T, S] float32 or None)``."""
        source_ids, target_in = self._split_inputs(inputs)
        training = bool(training)
        encoded = self.encode(source_ids, training=training)
        state = self.initial_decoder_state(encoded)

        p = self.sampling_probability if sampling_probability is None else sampling_probability
        sampling = training and not (isinstance(p, (int, float)) and float(p) == 0.0)

        target_in = ops.cast(ops.convert_to_tensor(target_in), "int32")
        tokens_tm = tf.transpose(target_in, [1, 0])  # [T, B]
        steps = tokens_tm.shape[0]
        if steps is None:
            steps = tf.shape(tokens_tm)[0]
        batch = tf.shape(tokens_tm)[1]
        dtype = self.compute_dtype
        units = self.decoder_units

        masks = self.dropout_masks(batch, training, steps=steps)
        embedded_tm = self.target_embedding(tokens_tm)  # [T, B, E], one gather
        if masks["embedding"] is not None:
            embedded_tm = embedded_tm * masks["embedding"]
        embedded_ta = tf.TensorArray(dtype, size=steps, element_shape=embedded_tm.shape[1:])
        embedded_ta = embedded_ta.unstack(embedded_tm)
        if sampling:
            use_model = keras.random.uniform(
                (steps, tokens_tm.shape[1] or batch), seed=self.seed_generator
            ) < ops.cast(p, "float32")
        weights = [cell.recurrent_weights() for cell in self.decoder_cells]  # read once

        # With scheduled sampling the logits are needed in the loop (for the argmax) and are
        # collected there; otherwise h̃ is collected and projected after the loop in one matmul.
        out_dim, out_dtype = (self.target_vocab_size, "float32") if sampling else (units, dtype)
        batch_static = tokens_tm.shape[1]
        outputs_ta = tf.TensorArray(
            out_dtype, size=steps, element_shape=tf.TensorShape([batch_static, out_dim])
        )
        attention_ta = tf.TensorArray(
            tf.float32,
            size=steps if return_attention else 0,
            element_shape=tf.TensorShape([batch_static, encoded["mask"].shape[1]]),
        )

        def body(t, outputs_ta, attention_ta, prev_prediction, state):
            embedded = embedded_ta.read(t)
            if sampling:
                model_embedded = self.target_embedding(prev_prediction)
                if masks["embedding"] is not None:
                    model_embedded = model_embedded * masks["embedding"][t]
                feed_model = tf.logical_and(use_model[t], t > 0)[:, None]
                embedded = tf.where(feed_model, ops.cast(model_embedded, dtype), embedded)
            step_masks = {
                "cells": masks["cells"],
                "attentional": None if masks["attentional"] is None else masks["attentional"][t],
            }
            attentional, state, attention = self._core_step(
                embedded, state, encoded, training, step_masks, weights
            )
            if sampling:
                logits = ops.cast(self.output_layer(attentional), "float32")
                prev_prediction = tf.argmax(logits, axis=-1, output_type=tf.int32)
                outputs_ta = outputs_ta.write(t, logits)
            else:
                outputs_ta = outputs_ta.write(t, attentional)
            if return_attention:
                attention_ta = attention_ta.write(t, attention)
            return t + 1, outputs_ta, attention_ta, prev_prediction, state

        _, outputs_ta, attention_ta, _, _ = tf.while_loop(
            lambda t, *_: t < steps,
            body,
            (tf.constant(0, tf.int32), outputs_ta, attention_ta, tf.zeros([batch], tf.int32), state),
            maximum_iterations=steps,
        )
        outputs = tf.transpose(outputs_ta.stack(), [1, 0, 2])  # [B, T, units or V]
        logits = outputs if sampling else self.output_layer(outputs)
        attention = tf.transpose(attention_ta.stack(), [1, 0, 2]) if return_attention else None
        return ops.cast(logits, "float32"), attention

    def call(self, inputs, training=None, sampling_probability=None):
        logits, _ = self._teacher_forcing(inputs, training, sampling_probability, return_attention=False)
        return logits

    def loss_sum(self, inputs, target_out, training=None, sampling_probability=None):
        """``(summed cross-entropy over the real target tokens, their number)``, float32 scalars.

        Args:
            inputs: ``{"source_ids": [B, S], "target_in": [B, T]}``.
            target_out: ``[B, T]`` int gold next tokens; 0 (padding) positions are left out.
            training: whether dropout (and scheduled sampling) is active.
            sampling_probability: optional override of the attribute.

        ``loss / count`` is the per-token loss; sums of both can be all-reduced across replicas.
        """
        logits = self(inputs, training=training, sampling_probability=sampling_probability)
        target_out = ops.cast(ops.convert_to_tensor(target_out), "int32")
        mask = ops.not_equal(target_out, PAD_ID)
        xent = keras.losses.sparse_categorical_crossentropy(
            ops.where(mask, target_out, 0), logits, from_logits=True
        )
        count = ops.sum(ops.cast(mask, "float32"))
        return ops.sum(ops.where(mask, xent, ops.zeros_like(xent))), count

    def attention_maps(self, source_ids, target_in):
        """Attention weights ``[B, T, S]`` float32 under teacher forcing (inference mode).

        Row ``[b, t]`` is the distribution over the source positions when predicting
        ``target_out[b, t]`` from ``target_in[b, :t + 1]`` (0 at source padding), e.g. for
        alignment plots.
        """
        _, attention = self._teacher_forcing(
            {"source_ids": source_ids, "target_in": target_in}, False, None, return_attention=True
        )
        return attention

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size,
                "cell": self.cell,
                "encoder_layers": self.encoder_layers,
                "decoder_layers": self.decoder_layers,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "decoder_dim": self.decoder_dim,
                "attention": self.attention_score,
                "attention_units": self.attention_units,
                "input_feeding": self.input_feeding,
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "activation": self.activation,
                "sampling_probability": self.sampling_probability,
                "seed": self.seed,
            }
        )
        return config
