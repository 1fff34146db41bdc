"""Gradient-flow diagnostics: how much the loss at the last step still feels the hidden state ``t`` steps back.

For a language model and a sequence of ``T`` tokens, :func:`gradient_flow` returns
``||dL_T / dh_t||`` for ``t = 1..T``, where ``L_T`` is the cross-entropy of the prediction at the
last step and ``h_t`` the top recurrent layer's output at step ``t``. An Elman RNN's curve falls
off exponentially (vanishing gradients); LSTM and GRU keep it far flatter.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def gradient_flow(model, ids, targets) -> np.ndarray:
    """Norms ``[T]`` of ``dL_T/dh_t`` (averaged over the batch) for an ``RNNLanguageModel``.

    Args:
        model: a built language model with ``embedding``, ``recurrent_layers`` and ``initial_state``.
        ids: int array ``[batch, T]``.
        targets: int array ``[batch, T]``; only the last column is used.
    """
    ids = tf.convert_to_tensor(ids)
    batch, steps = ids.shape
    x = model.embedding(ids)
    states = model.initial_state(batch)
    top_outputs = []
    with tf.GradientTape(persistent=False) as tape:
        for t in range(steps):
            h = x[:, t, :]
            for i, layer in enumerate(model.recurrent_layers):
                h, states[i] = layer.cell(h, list(states[i]), training=False)
                states[i] = list(states[i])
            tape.watch(h)
            top_outputs.append(h)
        last = top_outputs[-1]
        if model.tie_weights:
            logits = tf.matmul(last, tf.transpose(model.embedding.embeddings)) + model.output_bias
        else:
            logits = model.output_layer(last)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(tf.convert_to_tensor(targets)[:, -1], logits, from_logits=True)
        )
    grads = tape.gradient(loss, top_outputs)
    return np.array([float(tf.reduce_mean(tf.norm(g, axis=-1))) if g is not None else 0.0 for g in grads])
