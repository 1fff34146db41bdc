"""Masked pooling of a padded batch of sequences into one vector per sequence.

Every function takes a right-padded batch: ``sequence [batch, time, D]`` and
``mask [batch, time]`` (True for the real steps, which come first). Padding
never enters a result, and a row with no real step gives zeros (no NaN, no
``-inf``). Everything is gathers and ``where``s with static shapes, so the
functions compile under XLA (``jit_compile=True``) and run in mixed precision:
sums are taken in float32 and the result has the dtype of ``sequence``.
"""

from __future__ import annotations

import numpy as np
from keras import ops

__all__ = ["POOLING_MODES", "masked_pooling", "bidirectional_last"]

POOLING_MODES = ("last", "mean", "max")


def _prepare(sequence, mask):
    sequence = ops.convert_to_tensor(sequence)
    if len(sequence.shape) != 3:
        raise ValueError(f"`sequence` must be [batch, time, D], got shape {sequence.shape}.")
    if mask is None:
        mask = ops.ones(ops.shape(sequence)[:2], dtype="bool")
    else:
        mask = ops.cast(ops.convert_to_tensor(mask), "bool")
        if len(mask.shape) != 2:
            raise ValueError(f"`mask` must be [batch, time], got shape {mask.shape}.")
    return sequence, mask


def _last_index(mask):
    """Per row, the index of the last True step (0 for a row with none) and whether it has any."""
    time = ops.shape(mask)[1]
    positions = ops.arange(time, dtype="int32")[None, :]
    index = ops.max(ops.where(mask, positions, ops.zeros_like(positions) - 1), axis=1)  # -1: none
    has_any = index >= 0
    return ops.maximum(index, 0), has_any


def _gather_steps(sequence, index):
    """``sequence[b, index[b], :]`` for every row: ``[batch, time, D], [batch] -> [batch, D]``."""
    index = ops.cast(index, "int32")[:, None, None]  # [B, 1, 1], broadcast over D
    return ops.take_along_axis(sequence, index, axis=1)[:, 0, :]


def masked_pooling(sequence, mask, mode="last"):
    """Pools ``[batch, time, D]`` into ``[batch, D]`` over the real steps only.

    Args:
        sequence: ``[batch, time, D]`` float tensor (for example the outputs of
            a recurrent layer with ``return_sequences=True``).
        mask: ``[batch, time]`` boolean (or 0/1) tensor, True at the real steps;
            ``None`` means every step is real.
        mode: ``"last"``: the output at the last real step (index ``len - 1``
            for right padding), never a padding step; ``"mean"``: the mean over
            the real steps; ``"max"``: the element-wise max over the real steps
            (padding never wins, even when every real value is negative).

    Returns:
        ``[batch, D]`` tensor of ``sequence``'s dtype; zeros for a row without
        any real step.

    Example:

    >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    >>> mask = np.array([[True, True, False], [True, True, True]])
    >>> np.asarray(masked_pooling(x, mask, "last"))
    array([[ 2.,  3.],
           [10., 11.]], dtype=float32)
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"Unknown pooling mode {mode!r}; expected one of {POOLING_MODES}.")
    sequence, mask = _prepare(sequence, mask)
    dtype = sequence.dtype
    zeros = ops.zeros_like(sequence[:, 0, :])

    if mode == "last":
        index, has_any = _last_index(mask)
        pooled = _gather_steps(sequence, index)
        return ops.where(has_any[:, None], pooled, zeros)

    mask3 = mask[:, :, None]
    has_any = ops.any(mask, axis=1)[:, None]
    if mode == "mean":
        x = ops.cast(sequence, "float32")
        total = ops.sum(ops.where(mask3, x, ops.zeros_like(x)), axis=1)
        count = ops.sum(ops.cast(mask, "float32"), axis=1)[:, None]
        pooled = total / ops.maximum(count, 1.0)  # an empty row: 0 / 1
        return ops.cast(pooled, dtype)

    # "max": padding becomes the dtype's lowest finite value, so it never wins
    # over a real step, and rows without any real step are replaced by zeros.
    lowest = ops.full_like(sequence, _lowest(dtype))
    pooled = ops.max(ops.where(mask3, sequence, lowest), axis=1)
    return ops.where(has_any, pooled, zeros)


def _lowest(dtype):
    """The lowest finite value of a float dtype (a Python float)."""
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("tf.", "")
    if name == "bfloat16":
        return -3.3895313892515355e38  # the lowest finite bfloat16
    return float(np.finfo(np.dtype(name)).min)


def bidirectional_last(sequence, mask, units):
    """The "last" summary of a ``Bidirectional`` (merge ``"concat"``) sequence.

    The forward direction has read the whole sequence at the last real step,
    the backward direction at the *first* step, so the summary is
    ``concat(forward[len - 1], backward[0])``: the forward half (the first
    ``units`` features) at the last real step, the backward half (the last
    ``units`` features) at index 0.

    Args:
        sequence: ``[batch, time, 2 * units]`` output of
            ``keras.layers.Bidirectional(..., return_sequences=True)``,
            forward half first.
        mask: ``[batch, time]`` boolean tensor, True at the real steps (right
            padding); ``None`` means every step is real.
        units: units of one direction.

    Returns:
        ``[batch, 2 * units]``; zeros for a row without any real step.

    Example:

    >>> seq = np.arange(12, dtype="float32").reshape(1, 3, 4)  # units = 2
    >>> np.asarray(bidirectional_last(seq, np.array([[True, True, False]]), 2))
    array([[4., 5., 2., 3.]], dtype=float32)
    """
    sequence, mask = _prepare(sequence, mask)
    if sequence.shape[-1] is not None and sequence.shape[-1] != 2 * units:
        raise ValueError(
            f"Expected a concat of two directions of {units} units (last dim {2 * units}), "
            f"got shape {sequence.shape}."
        )
    forward = masked_pooling(sequence[:, :, :units], mask, "last")
    has_any = ops.any(mask, axis=1)[:, None]
    backward = sequence[:, 0, units:]
    backward = ops.where(has_any, backward, ops.zeros_like(backward))
    return ops.concatenate([forward, backward], axis=-1)
