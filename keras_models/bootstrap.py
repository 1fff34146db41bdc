"""Is a challenger really better? Paired bootstrap comparisons of two models on the same items.

A model's headline metric on a split is a function of sufficient statistics summed over the split's
items (sentences, documents, sources): ``accuracy`` of (correct, total), ``perplexity`` of (summed
negative log-likelihood, tokens), span ``f1`` of (tp, fp, fn), corpus ``bleu`` of n-gram counts,
... :data:`SCORES` holds these functions, vectorised: each maps summed statistics ``[..., k]`` to
scores ``[...]`` with exactly the figures the evaluators of :mod:`keras_models.evaluation` report
from the same sums.

:func:`paired_bootstrap` resamples the items with replacement, the same draw for both models (a
paired design: an item that is hard for one model is usually hard for the other, so the noise of
*which* items were drawn largely cancels in the difference), scores both models on every resample
and reports the difference, its percentile confidence interval and ``p_better``, the fraction of
resamples in which the candidate is strictly better (Koehn 2004, "Statistical significance tests
for machine translation evaluation"). :func:`better_with_confidence` turns that into a decision.
:func:`pair_items` lines two models' per-item statistics up by item key
(:class:`keras_models.item_stats.ItemStats`).

Pure NumPy (and :mod:`math`): no TensorFlow, Keras or sacrebleu here.

Example:
    >>> cand = np.array([[1, 1]] * 90 + [[0, 1]] * 10, float)  # 90 of 100 right
    >>> champ = np.array([[1, 1]] * 70 + [[0, 1]] * 30, float)  # 70 of 100 right
    >>> result = paired_bootstrap(cand, champ, "accuracy", samples=500)
    >>> round(result.difference, 2), better_with_confidence(result, 0.95)
    (0.2, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

__all__ = ["PairedComparison", "SCORES", "Score", "better_with_confidence", "pair_items", "paired_bootstrap",
           "resolve_score"]


# ------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class Score:
    """A named score of summed per-item statistics.

    ``fn`` maps sums ``[..., k]`` to scores ``[...]``; ``columns`` names the ``k`` statistics (for a
    per-class layout, the columns of one class; ``k`` is then a multiple of their number, see
    :attr:`per_class`).
    """

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    greater_is_better: bool
    columns: tuple[str, ...]
    per_class: bool = False
    doc: str = ""

    def check_width(self, k: int) -> str | None:
        """None if ``k`` statistics per item fit this score, else what is wrong."""
        width = len(self.columns)
        if self.per_class:
            if k < width or k % width:
                return f"{self.name} needs {width} statistics per class (k a positive multiple of {width}), got k={k}"
        elif k != width:
            return f"{self.name} needs k={width} statistics per item ({', '.join(self.columns)}), got k={k}"
        return None

    def __call__(self, sums) -> np.ndarray:
        sums = np.asarray(sums, np.float64)
        problem = self.check_width(sums.shape[-1] if sums.ndim else 0)
        if problem:
            raise ValueError(problem)
        return self.fn(sums)


# Elementwise math.exp / math.log (the functions the evaluators and sacrebleu call), so that scores
# of the same sums are the same floats; they only ever run over one value per resample.
_exp = np.vectorize(math.exp, otypes=[np.float64])
_log = np.vectorize(math.log, otypes=[np.float64])


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (seqeval, scikit-learn: zero_division=0)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _rate(s: np.ndarray) -> np.ndarray:
    """``a / max(b, 1)``: accuracy, error rates, mean loss, as the evaluators divide."""
    return s[..., 0] / np.maximum(s[..., 1], 1.0)


def _loss(s: np.ndarray) -> np.ndarray:
    return _rate(s)


def _perplexity(s: np.ndarray) -> np.ndarray:
    return _exp(np.minimum(_rate(s), 700.0))


def _bits(s: np.ndarray) -> np.ndarray:
    return _rate(s) / math.log(2)


def _prf(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Micro precision, recall, F1 of summed (tp, fp, fn), as seqeval computes them (``metrics._prf``)."""
    tp, fp, fn = s[..., 0], s[..., 1], s[..., 2]
    precision, recall = _divide(tp, tp + fp), _divide(tp, tp + fn)
    denom = 1.0 * precision + recall
    denom = np.where(denom == 0.0, 1.0, denom)
    return precision, recall, (1 + 1.0) * precision * recall / denom


def _macro_f1(s: np.ndarray) -> np.ndarray:
    """scikit-learn's ``f1_score(average="macro", labels=<all C classes>, zero_division=0)``."""
    per = s.reshape(*s.shape[:-1], -1, 3)
    tp, fp, fn = per[..., 0], per[..., 1], per[..., 2]
    f = _divide((1 + 1.0) * tp, 1.0 * (tp + fn) + (tp + fp))
    return np.sum(f, axis=-1) / f.shape[-1]


def _bleu(s: np.ndarray) -> np.ndarray:
    """sacrebleu's corpus BLEU (``BLEU(tokenize="none")``: smoothing "exp", max order 4, no
    effective order) of summed (matches[4], totals[4], hyp_len, ref_len), step by step as
    ``BLEU.compute_bleu`` does it."""
    correct, total = s[..., 0:4], s[..., 4:8]
    sys_len, ref_len = s[..., 8], s[..., 9]
    short = sys_len < ref_len
    ratio = 1 - ref_len / np.where(sys_len > 0, sys_len, 1.0)
    bp = np.where(short, np.where(sys_len > 0, _exp(np.where(short, ratio, 0.0)), 0.0), 1.0)
    log_sum = np.zeros(s.shape[:-1])
    active = np.ones(s.shape[:-1], bool)  # orders before the first one with no n-grams at all
    smooth = np.ones(s.shape[:-1])
    for n in range(4):
        active &= total[..., n] != 0
        zero = active & (correct[..., n] == 0)
        smooth = np.where(zero, smooth * 2, smooth)
        safe_total = np.where(active, total[..., n], 1.0)
        precision = np.where(correct[..., n] == 0, 100.0 / (smooth * safe_total),
                             100.0 * correct[..., n] / safe_total)
        precision = np.where(active, precision, 0.0)
        # sacrebleu's my_log: log(0) is -9999999999
        log_sum = log_sum + np.where(precision == 0.0, -9999999999.0, _log(np.where(precision == 0.0, 1.0, precision)))
    score = bp * _exp(log_sum / 4)
    return np.where(np.any(correct != 0, axis=-1), score, 0.0)


CHRF_ORDER = 6  # sacrebleu's CHRF(): 6 character n-gram orders, no word n-grams, beta 2


def _chrf(s: np.ndarray) -> np.ndarray:
    """sacrebleu's corpus chrF (``CHRF()`` defaults) of summed [hyp, ref, match] per order, as
    ``CHRF._compute_f_score`` does it."""
    eps, factor = 1e-16, 2**2
    avg_prec = np.zeros(s.shape[:-1])
    avg_rec = np.zeros(s.shape[:-1])
    order = np.zeros(s.shape[:-1])
    for i in range(CHRF_ORDER):
        n_hyp, n_ref, n_match = s[..., 3 * i], s[..., 3 * i + 1], s[..., 3 * i + 2]
        prec = np.where(n_hyp > 0, n_match / np.where(n_hyp > 0, n_hyp, 1.0), eps)
        rec = np.where(n_ref > 0, n_match / np.where(n_ref > 0, n_ref, 1.0), eps)
        both = (n_hyp > 0) & (n_ref > 0)
        avg_prec = np.where(both, avg_prec + prec, avg_prec)
        avg_rec = np.where(both, avg_rec + rec, avg_rec)
        order = order + both
    some = order > 0
    avg_prec = np.where(some, avg_prec / np.where(some, order, 1.0), 0.0)
    avg_rec = np.where(some, avg_rec / np.where(some, order, 1.0), 0.0)
    total = avg_prec + avg_rec
    score = (1 + factor) * avg_prec * avg_rec
    score = score / np.where(total != 0, (factor * avg_prec) + avg_rec, 1.0)
    return np.where(total != 0, 100 * score, 0.0)


_NLL = ("nll", "tokens")
_SPANS = ("tp", "fp", "fn")
_BLEU = tuple(f"matches_{n}" for n in range(1, 5)) + tuple(f"totals_{n}" for n in range(1, 5)) + ("hyp_len", "ref_len")
_CHRF = tuple(f"{what}_{n}" for n in range(1, CHRF_ORDER + 1) for what in ("hyp", "ref", "match"))

SCORES: dict[str, Score] = {s.name: s for s in (
    Score("accuracy", _rate, True, ("correct", "total"), doc="correct / max(total, 1)"),
    Score("loss", _loss, False, _NLL, doc="mean negative log-likelihood: nll (nats) / max(tokens, 1)"),
    Score("perplexity", _perplexity, False, _NLL, doc="exp(min(nll / max(tokens, 1), 700))"),
    Score("bpc", _bits, False, _NLL, doc="bits per token (character): nll / max(tokens, 1) / ln 2"),
    Score("precision", lambda s: _prf(s)[0], True, _SPANS, doc="micro span precision tp / (tp + fp) (seqeval)"),
    Score("recall", lambda s: _prf(s)[1], True, _SPANS, doc="micro span recall tp / (tp + fn) (seqeval)"),
    Score("f1", lambda s: _prf(s)[2], True, _SPANS, doc="micro span F1 of (tp, fp, fn) as seqeval computes it"),
    Score("macro_f1", _macro_f1, True, _SPANS, per_class=True,
          doc="unweighted mean over C classes of 2tp / (2tp + fp + fn) (0 for a class with none): "
              "k = 3C, the (tp, fp, fn) of class 0, then of class 1, ..."),
    Score("wer", _rate, False, ("errors", "reference_words"),
          doc="errors / max(reference words, 1); G2P's word error rate counts one error per wrong output, "
              "one word per source"),
    Score("per", _rate, False, ("errors", "reference_tokens"),
          doc="token (phoneme) error rate: edit errors / max(reference tokens, 1)"),
    Score("bleu", _bleu, True, _BLEU, doc="sacrebleu corpus BLEU (tokenize none, exp smoothing)"),
    Score("chrf", _chrf, True, _CHRF, doc="sacrebleu corpus chrF (6 character orders, beta 2)"),
)}


def resolve_score(name: str) -> Score:
    """The score of a statistic's name: a name in :data:`SCORES`, or one with a variant prefix (``beam5_wer``
    is ``wer``); the longest score name that fits wins (``beam5_macro_f1`` is ``macro_f1``)."""
    if name in SCORES:
        return SCORES[name]
    fits = [s for s in SCORES if name.endswith("_" + s) and len(name) > len(s) + 1]
    if not fits:
        raise ValueError(f"unknown score {name!r}; scores: {', '.join(SCORES)} (optionally after a prefix, "
                         "e.g. beam5_wer)")
    return SCORES[max(fits, key=len)]


# ---------------------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class PairedComparison:
    """The result of :func:`paired_bootstrap`.

    ``candidate`` / ``champion``: each model's score on all the items; ``difference``: candidate −
    champion, sign-adjusted so that positive means the candidate is better (champion − candidate
    for a score where lower is better); ``ci_low`` / ``ci_high``: the percentile interval of the
    resampled differences at ``level``; ``p_better``: the fraction of resamples in which the
    candidate is strictly better.
    """

    score: str
    n_items: int
    samples: int
    level: float
    candidate: float
    champion: float
    difference: float
    ci_low: float
    ci_high: float
    p_better: float
    greater_is_better: bool

    def to_dict(self) -> dict:
        return asdict(self)


CHUNK_CELLS = 1 << 22  # resample counts held at once (resamples x items): 32 MB of float64


def _check_stats(stats, what: str) -> np.ndarray:
    arr = np.asarray(stats)
    if arr.ndim != 2:
        raise ValueError(f"{what} statistics must be a 2-D array [n_items, k], got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{what} statistics must be numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} statistics hold NaN or infinite values")
    return arr


def paired_bootstrap(candidate, champion, score: str, *, samples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> PairedComparison:
    """Compares two models' ``score`` on the same items by the paired bootstrap.

    Args:
        candidate: ``[n_items, k]`` per-item statistics of the candidate (the layout of ``score``,
            see :data:`SCORES`).
        champion: the champion's, for the same items in the same order (:func:`pair_items`).
        score: a name in :data:`SCORES` (or a prefixed one, see :func:`resolve_score`).
        samples: bootstrap resamples.
        level: the confidence level of the interval, in (0, 1).
        seed: the resampling seed.

    Every resample draws ``n_items`` item indices with replacement, the same ones for both models;
    it is held as counts per item (``[resamples, n_items]``, a bounded chunk of resamples at a time)
    and multiplied with each model's statistics, so a resample costs two matrix-vector products.
    The result depends only on the inputs, ``samples`` and ``seed``.

    Raises:
        ValueError: shapes that differ or are not ``[n, k]``, ``k`` that does not fit the score, no
            items, an unknown score, ``samples < 1``, ``level`` outside (0, 1).
    """
    spec = resolve_score(score)
    cand, champ = _check_stats(candidate, "candidate"), _check_stats(champion, "champion")
    if cand.shape != champ.shape:
        raise ValueError(f"candidate and champion statistics differ in shape: {cand.shape} vs {champ.shape} "
                         "(pair them item by item first: pair_items)")
    n, k = cand.shape
    if n == 0:
        raise ValueError("no items to compare (n_items == 0): the two models share no scored item")
    problem = spec.check_width(k)
    if problem:
        raise ValueError(problem)
    if int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    samples = int(samples)
    sign = 1.0 if spec.greater_is_better else -1.0

    full_cand, full_champ = float(spec.fn(cand.sum(axis=0))), float(spec.fn(champ.sum(axis=0)))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(samples, CHUNK_CELLS // n))
    differences = np.empty(samples)
    for start in range(0, samples, chunk):
        rows = min(chunk, samples - start)
        draws = rng.integers(0, n, size=(rows, n))
        flat = (np.arange(rows)[:, None] * n + draws).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        differences[start : start + rows] = sign * (spec.fn(counts @ cand) - spec.fn(counts @ champ))
    alpha = (1.0 - float(level)) / 2
    low, high = np.quantile(differences, [alpha, 1.0 - alpha])
    return PairedComparison(
        score=spec.name, n_items=int(n), samples=samples, level=float(level), candidate=full_cand,
        champion=full_champ, difference=sign * (full_cand - full_champ), ci_low=float(low), ci_high=float(high),
        p_better=float(np.mean(differences > 0)), greater_is_better=spec.greater_is_better,
    )


def better_with_confidence(comparison: PairedComparison, confidence: float) -> bool:
    """Whether the candidate is better than the champion with ``confidence`` (e.g. 0.95).

    True only if ``p_better >= confidence``: the candidate is strictly better in at least that
    fraction of the resamples. This is the one-sided test: equivalently, the ``1 - confidence``
    percentile of the resampled differences is above 0 (the one-sided interval excludes 0). Ties
    (a resample with no difference) count against the candidate, so identical models, or a
    candidate that differs from the champion on no item, are never better.
    """
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return comparison.p_better >= float(confidence)


# ------------------------------------------------------------------------------------ pairing
def _occurrences(keys: np.ndarray) -> list[tuple[str, int]]:
    """``(key, i)`` for the ``i``-th occurrence of each key (0-based)."""
    seen: dict[str, int] = {}
    out = []
    for key in keys.tolist():
        i = seen.get(key, 0)
        seen[key] = i + 1
        out.append((key, i))
    return out


def pair_items(candidate_keys, candidate_stats, champion_keys, champion_stats) -> tuple[np.ndarray, np.ndarray, int]:
    """The items two per-item sets share, lined up: ``(candidate stats, champion stats, n_shared)``.

    Items are joined by key; a key that repeats (the same sentence twice in a split) pairs its
    ``i``-th occurrence in one set with its ``i``-th occurrence in the other. The shared items come
    in the candidate's order; items of either side without a partner are left out.
    """
    ckeys, hkeys = np.asarray(candidate_keys), np.asarray(champion_keys)
    cstats, hstats = np.asarray(candidate_stats), np.asarray(champion_stats)
    for what, keys, stats in (("candidate", ckeys, cstats), ("champion", hkeys, hstats)):
        if keys.ndim != 1:
            raise ValueError(f"{what} keys must be 1-D, got shape {keys.shape}")
        if stats.ndim != 2 or stats.shape[0] != keys.shape[0]:
            raise ValueError(f"{what} statistics must be [n_items, k] with one row per key ({keys.shape[0]}), "
                             f"got shape {stats.shape}")
    index = {occurrence: i for i, occurrence in enumerate(_occurrences(hkeys))}
    cand_rows, champ_rows = [], []
    for i, occurrence in enumerate(_occurrences(ckeys)):
        j = index.get(occurrence)
        if j is not None:
            cand_rows.append(i)
            champ_rows.append(j)
    cand_rows_a, champ_rows_a = np.asarray(cand_rows, np.int64), np.asarray(champ_rows, np.int64)
    return cstats[cand_rows_a], hstats[champ_rows_a], len(cand_rows)
