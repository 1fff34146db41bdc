"""`Attention`: masked global attention of one query per row over a memory, for encoder-decoders.

Three score functions between a decoder query ``q [Dq]`` and a source key ``k [Dk]``:

- ``"dot"`` (Luong et al. 2015): ``q . k`` (needs ``Dq == Dk``);
- ``"bilinear"`` (Luong's *general*): ``q W k``, ``W [Dq, Dk]``;
- ``"additive"`` (Bahdanau et al. 2015, Luong's *concat*): ``v . tanh(W [q; k])
  = v . tanh(q W_q + k W_k + b)`` with ``units`` hidden units.

The key side of every score is precomputed once per source sequence by :meth:`Attention.prepare_keys`
(``k W_k`` for additive, ``k W^T`` for bilinear, so that the per-step score is a dot product; the keys
themselves for dot): a decoder that attends at every target step projects its source memory once,
not once per step.

The scores are masked and normalized in float32 (also under mixed precision): masked positions get
a large negative score before the softmax and the probabilities are multiplied by the mask after it,
so a masked position has weight exactly 0 and a row with no real position gets all-zero weights and
a zero context (no NaN).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["Attention"]

SCORES = ("dot", "bilinear", "additive")  # the attention scores, by name (config choices come from here)
_MASKED_SCORE = -1e9  # finite: (-inf) - (-inf) would give NaN in an all-masked row


@keras.saving.register_keras_serializable(package="rnnflow")
class Attention(keras.layers.Layer):
    """Global attention (Luong / Bahdanau) of a query over keys, with a padding mask.

    With scores ``e_s = score(q, k_s)`` over the source positions ``s`` of one row, the weights are
    ``a = softmax(e)`` over the real positions (0 at masked ones) and the context is
    ``sum_s a_s k_s``. The keys double as the values.

    Weights (none for ``"dot"``):

    - ``"bilinear"``: ``kernel [Dq, Dk]`` (``score = q kernel k``);
    - ``"additive"``: ``query_kernel [Dq, units]``, ``query_bias [units]``,
      ``key_kernel [Dk, units]`` and ``score_vector [units]``
      (``score = score_vector . tanh(q query_kernel + query_bias + k key_kernel)``).

    The layer builds from the shapes of its first call, or explicitly with
    ``build(query_shape, keys_shape)``; :meth:`prepare_keys` needs a built layer (except for
    ``"dot"``).

    Args:
        score: ``"dot"``, ``"bilinear"`` or ``"additive"``.
        units: hidden units of the additive score (default: the query size); only for
            ``"additive"``.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        query: ``[batch, Dq]`` float, one query per row (the decoder state of one step).
        keys: ``[batch, S, Dk]`` float, the memory attended over (and averaged).
        mask: optional ``[batch, S]`` bool, True at real positions; None: all real.
        prepared: optional ``prepare_keys(keys)``, to skip the key projection at every step.

    Returns ``(context, weights)``: ``[batch, Dk]`` in the compute dtype and ``[batch, S]``
    float32 (rows sum to 1 over their real positions; all zeros for a row with none).

    Example:

    >>> attention = Attention("additive", units=8)
    >>> memory = np.random.rand(2, 5, 6).astype("float32")
    >>> mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    >>> context, weights = attention(np.zeros((2, 4), "float32"), memory, mask=mask)
    >>> tuple(context.shape), float(weights[0, 3])
    ((2, 6), 0.0)
    >>> prepared = attention.prepare_keys(memory)  # once per source sequence
    >>> context, weights = attention(np.ones((2, 4), "float32"), memory, mask=mask, prepared=prepared)
    """

    def __init__(self, score="dot", units=None, **kwargs):
        super().__init__(**kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if units is not None:
            if score != "additive":
                raise ValueError(
                    f"units is only used by the additive score, got units={units} with {score!r}"
                )
            if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
                raise ValueError(f"units must be a positive int, got {units!r}")
        self.score = score
        self.units = units
        self.supports_masking = True

    def build(self, query_shape, keys_shape):
        query_dim, key_dim = query_shape[-1], keys_shape[-1]
        if query_dim is None or key_dim is None:
            raise ValueError(
                f"Attention needs known feature sizes, got query shape {query_shape} and keys shape "
                f"{keys_shape}"
            )
        self.query_dim, self.key_dim = int(query_dim), int(key_dim)
        if self.score == "dot":
            if self.query_dim != self.key_dim:
                raise ValueError(
                    f"The dot score needs queries and keys of the same size, got query size {self.query_dim} "
                    f"and key size {self.key_dim}; use score='bilinear' or 'additive'"
                )
        elif self.score == "bilinear":
            self.kernel = self.add_weight(
                shape=(self.query_dim, self.key_dim), initializer="glorot_uniform", name="kernel"
            )
        else:
            units = self.units or self.query_dim
            self.query_kernel = self.add_weight(
                shape=(self.query_dim, units), initializer="glorot_uniform", name="query_kernel"
            )
            self.query_bias = self.add_weight(shape=(units,), initializer="zeros", name="query_bias")
            self.key_kernel = self.add_weight(
                shape=(self.key_dim, units), initializer="glorot_uniform", name="key_kernel"
            )
            self.score_vector = self.add_weight(
                shape=(units,), initializer="glorot_uniform", name="score_vector"
            )
        self.built = True

    def prepare_keys(self, keys):
        """The key side of the score, computed once per source sequence.

        Args:
            keys: ``[batch, S, Dk]`` float.

        Returns:
            ``[batch, S, P]`` in the compute dtype: the keys (``"dot"``, ``P = Dk``), ``keys W^T``
            (``"bilinear"``, ``P = Dq``) or ``keys W_k`` (``"additive"``, ``P = units``). Pass it as
            ``prepared`` to every call over the same keys.
        """
        keys = ops.cast(keys, self.compute_dtype)
        if self.score == "dot":
            return keys
        if not self.built:
            raise ValueError(
                f"Attention(score={self.score!r}) must be built before prepare_keys: call it once or call "
                "build(query_shape, keys_shape)"
            )
        if self.score == "bilinear":
            return ops.einsum("bsk,qk->bsq", keys, ops.cast(self.kernel, keys.dtype))
        return ops.einsum("bsk,ku->bsu", keys, ops.cast(self.key_kernel, keys.dtype))

    def scores(self, query, prepared):
        """Unmasked float32 scores ``[batch, S]`` of ``query [batch, Dq]`` against prepared keys."""
        dtype = self.compute_dtype
        query = ops.cast(query, dtype)
        prepared = ops.cast(prepared, dtype)
        if self.score == "additive":
            q = ops.matmul(query, ops.cast(self.query_kernel, dtype)) + ops.cast(self.query_bias, dtype)
            hidden = ops.tanh(prepared + q[:, None, :])  # [B, S, U]
            scores = ops.einsum("bsu,u->bs", hidden, ops.cast(self.score_vector, dtype))
        else:  # dot, and bilinear through its prepared keys k W^T
            scores = ops.einsum("bq,bsq->bs", query, prepared)
        return ops.cast(scores, "float32")

    def call(self, query, keys, mask=None, prepared=None):
        if prepared is None:
            prepared = self.prepare_keys(keys)
        scores = self.scores(query, prepared)
        if mask is None:
            return self._context(ops.softmax(scores, axis=-1), keys)
        mask = ops.cast(mask, "bool")
        scores = ops.where(mask, scores, ops.full_like(scores, _MASKED_SCORE))
        weights = ops.softmax(scores, axis=-1) * ops.cast(mask, "float32")
        return self._context(weights, keys)

    def _context(self, weights, keys):
        keys = ops.cast(keys, self.compute_dtype)
        context = ops.einsum("bs,bsk->bk", ops.cast(weights, keys.dtype), keys)
        return context, weights

    def compute_output_spec(self, query, keys, mask=None, prepared=None):
        return (
            keras.KerasTensor((query.shape[0], keys.shape[-1]), dtype=self.compute_dtype),
            keras.KerasTensor(tuple(keys.shape[:2]), dtype="float32"),
        )

    def compute_mask(self, inputs, previous_mask=None):
        return None  # the outputs are per row: the source mask is consumed here

    def get_config(self):
        config = super().get_config()
        config.update({"score": self.score, "units": self.units})
        return config
