"""`CRF`: a linear-chain conditional random field output layer for taggers.

A tagger produces unary scores `potentials [batch, time, num_tags]`; the CRF
adds a score for every pair of consecutive tags (`transitions[i, j]`: tag `i`
followed by tag `j`) and for the first and the last tag of a sequence
(`start_transitions`, `end_transitions`). The score of a tag sequence
`y_0 .. y_{L-1}` of length `L` is::

    s(y) = start[y_0] + sum_t potentials[t, y_t]
           + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{L-1}]

and `log p(y | potentials) = s(y) - log Z`, `log Z = logsumexp_y s(y)`.

The module-level functions are the whole computation and take the weights
as arguments, so they are usable (and tested) without the layer:

- `crf_sequence_score`: `s(y)` of given tags;
- `crf_log_norm`: `log Z` by the forward algorithm;
- `crf_log_likelihood`: `s(y) - log Z`;
- `viterbi_decode`: the best tags and their score.

Masks are right-padded: True for the first `length` steps of a sequence,
False after (`mask=None`: every step is real). Padded steps change nothing:
their potentials and tags are ignored. A sequence of length 0 has score,
log-normalizer and log-likelihood 0 and decodes to all zeros.

Everything is computed in float32 (float16 potentials from a mixed-precision
tagger are cast). The time loops are `tf.while_loop`s over time-major
tensors, reading their inputs from TensorArrays, vectorized over the batch,
so they compile under XLA (`jit_compile=True`) and run inside
`tf.distribute` replica functions.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = [
    "CRF",
    "crf_sequence_score",
    "crf_log_norm",
    "crf_log_likelihood",
    "viterbi_decode",
]


def _prepare(potentials, mask, transitions, start, end):
    """Casts to float32 / bool and fills in a missing mask.

    Returns `(potentials, mask, lengths, transitions, start, end)` with
    `lengths [batch]` int32, the number of True steps of each sequence.
    """
    potentials = tf.cast(tf.convert_to_tensor(potentials), tf.float32)
    if mask is None:
        mask = tf.ones(tf.shape(potentials)[:2], dtype=tf.bool)
    else:
        mask = tf.cast(tf.convert_to_tensor(mask), tf.bool)
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    transitions = tf.cast(tf.convert_to_tensor(transitions), tf.float32)
    start = tf.cast(tf.convert_to_tensor(start), tf.float32)
    end = tf.cast(tf.convert_to_tensor(end), tf.float32)
    return potentials, mask, lengths, transitions, start, end


def _time_steps(time_major):
    steps = time_major.shape[0]
    return tf.shape(time_major)[0] if steps is None else steps


def crf_sequence_score(potentials, tags, mask, transitions, start, end):
    """Unnormalized score `s(y)` of the given tag sequences.

    Args:
        potentials: `[batch, time, num_tags]` float unary scores.
        tags: `[batch, time]` int tags; those at padded steps are ignored.
        mask: `[batch, time]` bool, right-padded, or None (all steps real).
        transitions: `[num_tags, num_tags]`, score of tag `i` followed by
            tag `j`.
        start: `[num_tags]`, score of starting with each tag.
        end: `[num_tags]`, score of ending with each tag.

    Returns:
        `[batch]` float32; 0 for sequences of length 0.

    Example:

    >>> # start[0] + transitions[0, 2] + end[2] = 1 + 0 + 0
    >>> crf_sequence_score(np.zeros((1, 2, 3)), [[0, 2]], None,
    ...                    np.eye(3), np.ones(3), np.zeros(3))  # [1.]
    """
    potentials, mask, lengths, transitions, start, end = _prepare(
        potentials, mask, transitions, start, end
    )
    num_tags = transitions.shape[-1] or tf.shape(transitions)[-1]
    maskf = tf.cast(mask, tf.float32)
    tags = tf.where(mask, tf.cast(tags, tf.int32), 0)  # padded tags may be anything
    nonempty = tf.cast(lengths > 0, tf.float32)

    unary = tf.gather(potentials, tags[..., None], batch_dims=2)[..., 0]  # [B, T]
    unary = tf.reduce_sum(unary * maskf, axis=1)
    first = tf.gather(start, tags[:, 0]) * nonempty
    last_step = tf.maximum(lengths - 1, 0)
    last_tags = tf.gather(tags, last_step[:, None], batch_dims=1)[:, 0]
    last = tf.gather(end, last_tags) * nonempty
    # Pairs (t-1, t) with both steps real.
    pair = tf.gather(tf.reshape(transitions, [-1]), tags[:, :-1] * num_tags + tags[:, 1:])
    binary = tf.reduce_sum(pair * maskf[:, 1:] * maskf[:, :-1], axis=1)
    return unary + binary + first + last


def crf_log_norm(potentials, mask, transitions, start, end):
    """Log-partition `log Z = logsumexp over all tag sequences of s(y)`.

    The forward algorithm over the time-major potentials: `alpha_0 = start +
    potentials_0`, `alpha_t[j] = logsumexp_i(alpha_{t-1}[i] +
    transitions[i, j]) + potentials_t[j]`, kept unchanged at padded steps;
    `log Z = logsumexp_j(alpha[j] + end[j])`.

    Args:
        potentials: `[batch, time, num_tags]` float unary scores.
        mask: `[batch, time]` bool, right-padded, or None (all steps real).
        transitions: `[num_tags, num_tags]` (tag `i` followed by tag `j`).
        start: `[num_tags]` start scores.
        end: `[num_tags]` end scores.

    Returns:
        `[batch]` float32; 0 for sequences of length 0.

    Example:

    >>> z = crf_log_norm(potentials, mask, crf.transitions,
    ...                  crf.start_transitions, crf.end_transitions)
    """
    potentials, mask, lengths, transitions, start, end = _prepare(
        potentials, mask, transitions, start, end
    )
    pot_tm = tf.transpose(potentials, [1, 0, 2])  # [T, B, N]
    mask_tm = tf.transpose(mask, [1, 0])[..., None]  # [T, B, 1]
    time_steps = _time_steps(pot_tm)
    pot_ta = tf.TensorArray(tf.float32, size=time_steps, element_shape=pot_tm.shape[1:])
    pot_ta = pot_ta.unstack(pot_tm)
    mask_ta = tf.TensorArray(tf.bool, size=time_steps, element_shape=mask_tm.shape[1:])
    mask_ta = mask_ta.unstack(mask_tm)
    trans = transitions[None]  # [1, N_from, N_to]

    def body(t, alpha):
        new = tf.reduce_logsumexp(alpha[:, :, None] + trans, axis=1) + pot_ta.read(t)
        return t + 1, tf.where(mask_ta.read(t), new, alpha)

    alpha0 = start[None] + pot_ta.read(0)
    _, alpha = tf.while_loop(
        lambda t, _: t < time_steps,
        body,
        (tf.constant(1, tf.int32), alpha0),
        maximum_iterations=tf.maximum(time_steps - 1, 0),
    )
    log_z = tf.reduce_logsumexp(alpha + end[None], axis=1)
    return tf.where(lengths > 0, log_z, tf.zeros_like(log_z))


def crf_log_likelihood(potentials, tags, mask, transitions, start, end):
    """`log p(tags | potentials) = crf_sequence_score - crf_log_norm`.

    Args:
        potentials: `[batch, time, num_tags]` float unary scores.
        tags: `[batch, time]` int gold tags (ignored at padded steps).
        mask: `[batch, time]` bool, right-padded, or None (all steps real).
        transitions: `[num_tags, num_tags]` (tag `i` followed by tag `j`).
        start: `[num_tags]` start scores.
        end: `[num_tags]` end scores.

    Returns:
        `[batch]` float32 log-likelihoods (0 for sequences of length 0);
        the loss is usually `-mean` of it.

    Example:

    >>> ll = crf_log_likelihood(potentials, tags, mask, crf.transitions,
    ...                         crf.start_transitions, crf.end_transitions)
    >>> loss = -tf.reduce_mean(ll)
    """
    score = crf_sequence_score(potentials, tags, mask, transitions, start, end)
    return score - crf_log_norm(potentials, mask, transitions, start, end)


def viterbi_decode(potentials, mask, transitions, start, end):
    """Best tag sequences and their scores (Viterbi).

    The forward pass is the forward algorithm with `max` for `logsumexp`,
    recording a backpointer `[batch, num_tags]` per step. At padded steps the
    scores are kept and the backpointers are the identity, so backtracking
    from the last step walks through the padding unchanged and, in effect,
    starts from each sequence's own last real step. Padded steps are then
    set to tag 0.

    Args:
        potentials: `[batch, time, num_tags]` float unary scores.
        mask: `[batch, time]` bool, right-padded, or None (all steps real).
        transitions: `[num_tags, num_tags]` (tag `i` followed by tag `j`).
        start: `[num_tags]` start scores.
        end: `[num_tags]` end scores.

    Returns:
        `(tags, scores)`: `[batch, time]` int32 best tags (0 at padded steps)
        and `[batch]` float32 scores `s(tags)` (0 for sequences of length 0).

    Example:

    >>> tags, scores = viterbi_decode(potentials, mask, crf.transitions,
    ...                               crf.start_transitions, crf.end_transitions)
    """
    potentials, mask, lengths, transitions, start, end = _prepare(
        potentials, mask, transitions, start, end
    )
    pot_tm = tf.transpose(potentials, [1, 0, 2])  # [T, B, N]
    mask_tm = tf.transpose(mask, [1, 0])[..., None]  # [T, B, 1]
    time_steps = _time_steps(pot_tm)
    batch = tf.shape(pot_tm)[1]
    num_tags = pot_tm.shape[-1] or tf.shape(pot_tm)[-1]
    pot_ta = tf.TensorArray(tf.float32, size=time_steps, element_shape=pot_tm.shape[1:])
    pot_ta = pot_ta.unstack(pot_tm)
    mask_ta = tf.TensorArray(tf.bool, size=time_steps, element_shape=mask_tm.shape[1:])
    mask_ta = mask_ta.unstack(mask_tm)
    # Backpointers; entry 0 is never read.
    bp_ta = tf.TensorArray(tf.int32, size=time_steps, element_shape=pot_tm.shape[1:])
    identity = tf.broadcast_to(tf.range(num_tags, dtype=tf.int32)[None], tf.shape(pot_tm)[1:])
    bp_ta = bp_ta.write(0, identity)
    trans = transitions[None]

    def forward(t, alpha, bp_ta):
        scores = alpha[:, :, None] + trans  # [B, N_from, N_to]
        best_prev = tf.argmax(scores, axis=1, output_type=tf.int32)
        new = tf.reduce_max(scores, axis=1) + pot_ta.read(t)
        m_t = mask_ta.read(t)
        bp_ta = bp_ta.write(t, tf.where(m_t, best_prev, identity))
        return t + 1, tf.where(m_t, new, alpha), bp_ta

    alpha0 = start[None] + pot_ta.read(0)
    _, alpha, bp_ta = tf.while_loop(
        lambda t, *_: t < time_steps,
        forward,
        (tf.constant(1, tf.int32), alpha0, bp_ta),
        maximum_iterations=tf.maximum(time_steps - 1, 0),
    )
    final = alpha + end[None]
    best_last = tf.argmax(final, axis=1, output_type=tf.int32)  # [B]
    best_score = tf.reduce_max(final, axis=1)

    tags_ta = tf.TensorArray(tf.int32, size=time_steps, element_shape=best_last.shape)
    tags_ta = tags_ta.write(time_steps - 1, best_last)

    def backward(t, tag, tags_ta):
        prev = tf.gather(bp_ta.read(t), tag[:, None], batch_dims=1)[:, 0]
        return t - 1, prev, tags_ta.write(t - 1, prev)

    _, _, tags_ta = tf.while_loop(
        lambda t, *_: t > 0,
        backward,
        (time_steps - 1, best_last, tags_ta),
        maximum_iterations=tf.maximum(time_steps - 1, 0),
    )
    tags = tf.transpose(tags_ta.stack(), [1, 0])  # [B, T]
    tags = tf.reshape(tags, tf.stack([batch, time_steps]))
    tags = tf.where(mask, tags, tf.zeros_like(tags))
    best_score = tf.where(lengths > 0, best_score, tf.zeros_like(best_score))
    return tags, best_score


@keras.saving.register_keras_serializable(package="rnnflow")
class CRF(keras.layers.Layer):
    """Linear-chain CRF output layer for a sequence tagger.

    Put it on top of a layer producing unary scores `[batch, time,
    num_tags]` (typically `Dense(num_tags)` with no activation). Calling the
    layer decodes (Viterbi) and returns the best tags; training uses
    `log_likelihood`, whose negative mean is the loss. All the arithmetic is
    float32: float16 potentials from a `mixed_float16` tagger are cast, and
    the weights are float32 and never autocast (for full precision give the
    layer before the CRF `dtype="float32"`).

    Weights (zeros at first):

    - `transitions [num_tags, num_tags]`: score of tag `i` followed by tag
      `j`;
    - `start_transitions [num_tags]`: score of starting with each tag;
    - `end_transitions [num_tags]`: score of ending with each tag.

    Args:
        num_tags: Positive int, the number of tags.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        potentials: `[batch, time, num_tags]` float unary scores.
        mask: Optional `[batch, time]` bool, right-padded (True for the
            first `length` steps); taken from the Keras mask of the input
            when there is one. None: every step is real.

    Returns the best tags, `[batch, time]` int32 with 0 at padded steps (see
    `decode` for their scores).

    Example:

    >>> crf = CRF(num_tags=5)
    >>> potentials = keras.layers.Dense(5)(features)  # [batch, time, 5]
    >>> loss = -ops.mean(crf.log_likelihood(potentials, gold_tags, mask))
    >>> tags, scores = crf.decode(potentials, mask)
    >>> tags = crf(potentials, mask=mask)  # the same tags
    """

    def __init__(self, num_tags, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags <= 0:
            raise ValueError(f"`num_tags` must be a positive int, got {num_tags!r}.")
        self.num_tags = num_tags
        self.supports_masking = True

    def build(self, input_shape):
        last = input_shape[-1] if input_shape else None
        if last is not None and last != self.num_tags:
            raise ValueError(
                f"CRF(num_tags={self.num_tags}) needs potentials [batch, time, "
                f"{self.num_tags}], got shape {input_shape}."
            )
        n = self.num_tags
        # float32 and never autocast: the CRF computes in float32 under mixed precision.
        for name, shape in (("transitions", (n, n)), ("start_transitions", (n,)), ("end_transitions", (n,))):
            weight = self.add_weight(shape=shape, initializer="zeros", dtype="float32", autocast=False, name=name)
            setattr(self, name, weight)

    def _weights(self, potentials):
        if not self.built:
            self.build(tuple(tf.convert_to_tensor(potentials).shape))
        return (
            tf.convert_to_tensor(self.transitions),
            tf.convert_to_tensor(self.start_transitions),
            tf.convert_to_tensor(self.end_transitions),
        )

    def log_likelihood(self, potentials, tags, mask):
        """Log-probability of the gold tags.

        Args:
            potentials: `[batch, time, num_tags]` float unary scores.
            tags: `[batch, time]` int gold tags (ignored at padded steps).
            mask: `[batch, time]` bool, right-padded, or None (all real).

        Returns:
            `[batch]` float32 `log p(tags | potentials)`, 0 for sequences of
            length 0.
        """
        transitions, start, end = self._weights(potentials)
        return crf_log_likelihood(potentials, tags, mask, transitions, start, end)

    def decode(self, potentials, mask):
        """Viterbi decoding.

        Args:
            potentials: `[batch, time, num_tags]` float unary scores.
            mask: `[batch, time]` bool, right-padded, or None (all real).

        Returns:
            `(tags, scores)`: `[batch, time]` int32 best tags with 0 at padded
            steps, and `[batch]` float32 scores of those paths.
        """
        transitions, start, end = self._weights(potentials)
        return viterbi_decode(potentials, mask, transitions, start, end)

    def call(self, potentials, mask=None):
        return self.decode(potentials, mask)[0]

    def compute_output_spec(self, potentials, mask=None):
        return keras.KerasTensor(tuple(potentials.shape[:2]), dtype="int32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2])

    def get_config(self):
        config = super().get_config()
        config["num_tags"] = self.num_tags
        return config
