"""Model-independent decoding for encoder-decoders: greedy search and batched beam search.

The decoder is seen only through one function::

    step_fn(tokens, state) -> (logits, new_state)

- `tokens`: `[N]` int32, the previous token of each of the `N` rows;
- `state`: any nest (`tf.nest`) of tensors whose first dimension is `N`. It
  holds the recurrent states and also every per-row constant the step needs
  (the encoder memory, its mask, ...): the search tiles and gathers all of it
  the same way, so nothing but the step function knows what it contains;
- `logits`: `[N, vocab]` float scores of the next token (any float dtype;
  they are turned into log-probabilities with `log_softmax` in float32);
- `new_state`: a nest of the same structure, dtypes and shapes as `state`
  (the first dimension may lose its static size, the others must keep it).

The first step is fed `bos_id`. A sequence stops at its first `eos_id`,
which is part of the output and of its length; after it the output is
padded with 0. Every length counts generated tokens only (never `bos`) and is
at most `max_length`.

Both searches are one `tf.while_loop` vectorized over the batch (and the
beam): no Python loop over rows or steps, so they run eagerly and inside a
`tf.function` (with an unknown batch size too). The output length `L`
depends on the data (the longest returned sequence), so they are not meant
for XLA (`jit_compile=True`).

Beam search (`beam_search`):

- the state is tiled to `[batch * beam_size, ...]` (each row repeated
  `beam_size` times, see `tile_state`); at the first step only beam 0 of each
  row is live (the others start at `-inf`), so the first step does not pick
  the same token `beam_size` times;
- at each step the `beam_size` best continuations (by the sum of
  log-probabilities) among the `beam_size * vocab` continuations of the live
  beams of a row are kept, and the state rows are gathered from their parent
  beams;
- a continuation that ends in `eos` is finished: it leaves the live beams
  (its slot is dead, `-inf`, until the next step refills it) and enters the
  row's set of the `beam_size` best finished hypotheses, ranked by the
  normalized score `sum log p / length ** length_penalty` (`length` counts
  `eos`; `length_penalty=0`: the raw sum; larger values favour longer
  hypotheses). At step `max_length` every kept continuation is finished;
- stopping rule (exact): a row is done when the worst of its `beam_size`
  finished hypotheses scores at least as high as the best normalized score a
  live beam could still reach. Log-probabilities are `<= 0`, so the raw
  score of a live beam can only go down; its best normalized score is its
  current raw score divided by the largest of `(t + 1) ** length_penalty`
  (the shortest length it can still finish at) and `max_length **
  length_penalty` (the longest). A row with fewer than `beam_size` finished
  hypotheses, or with no live beam, is done only when no live beam is left.
  The loop ends when every row is done or after `max_length` steps. Because
  the rule only stops when no live beam can enter the finished set, the
  result is the one of running all `max_length` steps.

With `beam_size=1` and `length_penalty=0` beam search returns what
`greedy_search` returns. When the search space holds fewer than `beam_size`
hypotheses, the missing ones have score `-inf`, length 0 and all-0 tokens.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

__all__ = ["tile_state", "greedy_search", "beam_search"]

StepFn = Callable[[tf.Tensor, Any], "tuple[tf.Tensor, Any]"]

_NEG_INF = float("-inf")


def tile_state(state, k: int):
    """Repeats every row of every tensor of a state nest `k` times.

    Row `b` of the input becomes rows `b * k .. b * k + k - 1` of the output,
    the layout `beam_search` uses for `[batch * beam_size, ...]` states.

    Args:
        state: a nest of tensors (or arrays) whose first dimension is the
            batch.
        k: Positive int, the number of copies of each row.

    Returns:
        The same nest with tensors of first dimension `batch * k`.

    Example:

    >>> tile_state({"h": tf.constant([[1.0], [2.0]])}, 2)["h"]  # [[1], [1], [2], [2]]
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    return tf.nest.map_structure(lambda x: tf.repeat(tf.convert_to_tensor(x), k, axis=0), state)


def _to_tensors(state):
    flat = tf.nest.flatten(state)
    if not flat:
        raise ValueError("initial_state must hold at least one tensor (its first dimension is the batch size)")
    return tf.nest.map_structure(tf.convert_to_tensor, state)


def _batch_size(state):
    return tf.shape(tf.nest.flatten(state)[0], out_type=tf.int32)[0]


def _check_max_length(max_length):
    if isinstance(max_length, int) and max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")


def _state_invariants(state):
    """Shape invariants of a state nest: unknown first dimension, the others static."""
    return tf.nest.map_structure(lambda x: tf.TensorShape([None]).concatenate(x.shape[1:]), state)


def _call_step(step_fn, tokens, state):
    """Calls `step_fn` and packs its new state into the structure of `state`."""
    logits, new_state = step_fn(tokens, state)
    new_state = tf.nest.pack_sequence_as(state, tf.nest.flatten(new_state))
    new_state = tf.nest.map_structure(
        lambda new, old: tf.ensure_shape(new, tf.TensorShape([None]).concatenate(old.shape[1:])),
        new_state,
        state,
    )
    return logits, new_state


def _length_norm(length, length_penalty):
    """`length ** length_penalty` in float32 (length >= 1, so always positive)."""
    return tf.pow(tf.cast(length, tf.float32), length_penalty)


def greedy_search(step_fn: StepFn, initial_state, *, bos_id, eos_id, max_length):
    """Greedy decoding: the most probable next token at every step.

    Each row starts from `bos_id` and stops after its first `eos_id` (which
    is kept); the loop stops when every row has stopped or after
    `max_length` steps. Rows that stopped are fed 0 and their output is 0.

    Args:
        step_fn: `step_fn(tokens [N] int32, state) -> (logits [N, vocab],
            new_state)`, see the module docstring.
        initial_state: a nest of tensors of first dimension `batch` (the
            decoder state and the per-row constants such as the encoder
            memory).
        bos_id: int, the first input token.
        eos_id: int, the token that ends a sequence.
        max_length: positive int (or int32 scalar), the most tokens
            generated per row.

    Returns:
        `(tokens, lengths)`: `[batch, L]` int32 generated tokens, 0 after
        each row's `eos`, `L = max(lengths)`; and `[batch]` int32 lengths
        (tokens up to and including `eos`, or `max_length` for a row
        that never emitted it).

    Example:

    >>> memory = encoder(source_ids)                      # [batch, time, units]
    >>> state = {"h": decoder_init(memory), "memory": memory}
    >>> tokens, lengths = greedy_search(step, state, bos_id=1, eos_id=2, max_length=50)
    """
    _check_max_length(max_length)
    state = _to_tensors(initial_state)
    batch = _batch_size(state)
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    eos = tf.convert_to_tensor(eos_id, tf.int32)
    tokens = tf.fill(tf.reshape(batch, [1]), tf.convert_to_tensor(bos_id, tf.int32))
    finished = tf.zeros(tf.reshape(batch, [1]), tf.bool)
    lengths = tf.zeros(tf.reshape(batch, [1]), tf.int32)
    out = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=tf.TensorShape([None]))

    def cond(t, tokens, state, finished, lengths, out):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, tokens, state, finished, lengths, out):
        logits, state = _call_step(step_fn, tokens, state)
        nxt = tf.argmax(tf.cast(logits, tf.float32), axis=-1, output_type=tf.int32)
        nxt = tf.where(finished, tf.zeros_like(nxt), nxt)
        out = out.write(t, nxt)
        lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        finished = tf.logical_or(finished, tf.equal(nxt, eos))
        return t + 1, nxt, state, finished, lengths, out

    _, _, _, _, lengths, out = tf.while_loop(
        cond,
        body,
        (tf.constant(0, tf.int32), tokens, state, finished, lengths, out),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None]),
            _state_invariants(state),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape(None),
        ),
        maximum_iterations=max_length,
    )
    tokens = tf.transpose(out.stack(), [1, 0])  # [B, L]
    tokens = tf.reshape(tokens, tf.stack([batch, -1]))
    return tokens, lengths


def beam_search(
    step_fn: StepFn,
    initial_state,
    *,
    beam_size: int,
    bos_id,
    eos_id,
    max_length,
    length_penalty: float = 1.0,
):
    """Batched beam search; the `beam_size` best hypotheses of every row.

    See the module docstring for the algorithm and the (exact) stopping
    rule. Hypotheses are ranked by the normalized score `sum log p /
    length ** length_penalty`, `length` counting every generated token
    including `eos`.

    Args:
        step_fn: `step_fn(tokens [N] int32, state) -> (logits [N, vocab],
            new_state)`, see the module docstring; called with
            `N = batch * beam_size`.
        initial_state: a nest of tensors of first dimension `batch`, not
            tiled (the search tiles it).
        beam_size: positive int.
        bos_id: int, the first input token.
        eos_id: int, the token that ends a hypothesis.
        max_length: positive int (or int32 scalar), the most tokens of a
            hypothesis; hypotheses still live after `max_length` steps are
            finished as they are.
        length_penalty: float exponent of the length normalization; 0 ranks
            by the raw sum of log-probabilities.

    Returns:
        `(tokens, scores, lengths)`, hypotheses of each row sorted best
        first: `[batch, beam_size, L]` int32 tokens (0 after `eos`, `L` the
        longest returned length), `[batch, beam_size]` float32 normalized
        scores and `[batch, beam_size]` int32 lengths. Missing hypotheses
        (a search space smaller than `beam_size`) have score `-inf`,
        length 0 and tokens 0.

    Example:

    >>> tokens, scores, lengths = beam_search(step, state, beam_size=4,
    ...     bos_id=1, eos_id=2, max_length=50, length_penalty=0.6)
    >>> best = tokens[:, 0]                               # [batch, L]
    """
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    _check_max_length(max_length)
    k = beam_size
    state = _to_tensors(initial_state)
    batch = _batch_size(state)
    state = tile_state(state, k)
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    eos = tf.convert_to_tensor(eos_id, tf.int32)
    length_penalty = tf.convert_to_tensor(length_penalty, tf.float32)
    neg_inf = tf.constant(_NEG_INF, tf.float32)

    seq_shape = tf.stack([batch, k, max_length])
    alive_seq = tf.zeros(seq_shape, tf.int32)
    alive_scores = tf.tile(tf.constant([[0.0] + [_NEG_INF] * (k - 1)], tf.float32), tf.stack([batch, 1]))
    fin_seq = tf.zeros(seq_shape, tf.int32)
    fin_scores = tf.fill(tf.stack([batch, k]), neg_inf)
    fin_len = tf.zeros(tf.stack([batch, k]), tf.int32)
    tokens = tf.fill(tf.reshape(batch * k, [1]), tf.convert_to_tensor(bos_id, tf.int32))
    done = tf.zeros(tf.reshape(batch, [1]), tf.bool)
    row_offset = tf.range(batch)[:, None] * k  # [B, 1]

    def cond(t, tokens, state, alive_seq, alive_scores, fin_seq, fin_scores, fin_len, done):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(done)))

    def body(t, tokens, state, alive_seq, alive_scores, fin_seq, fin_scores, fin_len, done):
        logits, state = _call_step(step_fn, tokens, state)
        logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        vocab = tf.shape(logp)[-1]
        logp = tf.reshape(logp, tf.stack([batch, k, vocab]))
        candidates = tf.reshape(alive_scores[:, :, None] + logp, tf.stack([batch, k * vocab]))
        top_scores, top_idx = tf.math.top_k(candidates, k=k)  # [B, K], sorted
        parent = top_idx // vocab
        token = top_idx % vocab
        length = t + 1
        valid = top_scores > neg_inf
        final = tf.logical_and(valid, tf.logical_or(tf.equal(token, eos), length >= max_length))

        seq = tf.gather(alive_seq, parent, batch_dims=1)  # [B, K, max_length]
        seq = seq + tf.one_hot(t, max_length, dtype=tf.int32)[None, None, :] * token[:, :, None]

        # Merge the newly finished hypotheses into the finished set.
        new_fin = tf.where(final, top_scores / _length_norm(length, length_penalty), neg_inf)
        merged_scores = tf.concat([fin_scores, new_fin], axis=1)  # [B, 2K]
        fin_scores, keep = tf.math.top_k(merged_scores, k=k)
        fin_seq = tf.gather(tf.concat([fin_seq, seq], axis=1), keep, batch_dims=1)
        fin_len = tf.gather(tf.concat([fin_len, tf.fill(tf.shape(fin_len), length)], axis=1), keep, batch_dims=1)

        alive_scores = tf.where(tf.logical_and(valid, tf.logical_not(final)), top_scores, neg_inf)
        flat_parent = tf.reshape(row_offset + parent, [-1])
        state = tf.nest.map_structure(lambda x: tf.gather(x, flat_parent), state)
        tokens = tf.reshape(token, [-1])

        # Best normalized score a live beam can still reach (log p <= 0).
        denom = tf.maximum(
            _length_norm(length + 1, length_penalty), _length_norm(max_length, length_penalty)
        )
        bound = tf.reduce_max(alive_scores, axis=1) / denom
        done = fin_scores[:, -1] >= bound
        return t + 1, tokens, state, seq, alive_scores, fin_seq, fin_scores, fin_len, done

    seq_invariant = tf.TensorShape([None, k, None])
    scores_invariant = tf.TensorShape([None, k])
    loop = tf.while_loop(
        cond,
        body,
        (tf.constant(0, tf.int32), tokens, state, alive_seq, alive_scores, fin_seq, fin_scores, fin_len, done),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None]),
            _state_invariants(state),
            seq_invariant,
            scores_invariant,
            seq_invariant,
            scores_invariant,
            scores_invariant,
            tf.TensorShape([None]),
        ),
        maximum_iterations=max_length,
    )
    fin_seq, fin_scores, fin_len = loop[5], loop[6], loop[7]
    fin_len = tf.where(fin_scores > neg_inf, fin_len, tf.zeros_like(fin_len))
    in_seq = tf.range(max_length)[None, None, :] < fin_len[:, :, None]
    fin_seq = tf.where(in_seq, fin_seq, tf.zeros_like(fin_seq))
    out_length = tf.maximum(tf.reduce_max(fin_len), 0)
    return fin_seq[:, :, :out_length], fin_scores, fin_len
