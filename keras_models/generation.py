"""Text generation from a recurrent language model: one token at a time, keeping only the last state.

The prompt is read in one call; then each new token costs one recurrent step, so generating ``N``
tokens is linear in ``N`` (nothing is re-read). Sampling: greedy (``temperature=0``), temperature,
top-k and top-p (nucleus) filtering, combinable as in common practice (top-k, then top-p, on the
temperature-scaled distribution).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Sets to ``-inf`` every logit outside the top-k / the smallest set whose probability reaches top-p."""
    logits = np.array(logits, dtype=np.float64)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits)[-top_k]
        logits[logits < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probs = np.exp(logits[order] - logits[order[0]])
        probs /= probs.sum()
        cumulative = np.cumsum(probs)
        keep = cumulative - probs < top_p  # keep tokens until the mass before them reaches top_p
        logits[order[~keep]] = -np.inf
    return logits


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    banned: tuple[int, ...] = (),
) -> int:
    logits = np.array(logits, dtype=np.float64)
    if banned:
        logits[list(banned)] = -np.inf
    if temperature == 0:
        return int(np.argmax(logits))
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


class Generator:
    """Samples continuations from an ``RNNLanguageModel`` (any model with ``forward`` and ``initial_state``).

    Args:
        model: the language model.
        banned_ids: ids never generated (e.g. ``<pad>``, ``<unk>``, ``<bos>``).
        jit_compile: compile the one-step function with XLA.
    """

    def __init__(self, model, banned_ids: tuple[int, ...] = (), jit_compile: bool = False):
        self.model = model
        self.banned_ids = tuple(banned_ids)
        self._step = tf.function(
            lambda ids, state: self._last_logits(ids, state), jit_compile=jit_compile, reduce_retracing=True
        )

    def _last_logits(self, ids, state):
        logits, state = self.model.forward(ids, state, training=False)
        return logits[:, -1, :], state

    def generate(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        stop_id: int | None = None,
    ) -> list[int]:
        """The generated ids (the prompt not included); stops early at ``stop_id`` (included)."""
        if not prompt_ids:
            raise ValueError("the prompt must have at least one token (e.g. the <eos> id, to start a sentence)")
        rng = np.random.default_rng(seed)
        state = self.model.initial_state(1)
        logits, state = self._step(tf.constant([prompt_ids], tf.int32), state)
        out: list[int] = []
        for _ in range(max_tokens):
            token = sample_next(logits.numpy()[0], rng, temperature, top_k, top_p, self.banned_ids)
            out.append(token)
            if stop_id is not None and token == stop_id:
                break
            logits, state = self._step(tf.constant([[token]], tf.int32), state)
        return out
