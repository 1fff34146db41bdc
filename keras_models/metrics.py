"""Metrics of sequence outputs from sufficient statistics: span precision / recall / F1 (seqeval's
span extraction), error rates of decoded outputs against one or more references, corpus BLEU / chrF
(sacrebleu).

Each figure comes two ways: from every item at once (:func:`span_scores`, :func:`sequence_error_rates`,
:func:`text_scores`: tests, small tools, the references) and from counts summed over batches of items
(:func:`span_counts` → :func:`span_report`, :func:`error_counts`, :class:`TextStatistics`: what the
evaluators of :mod:`keras_models.evaluation` keep), with identical results.
"""

from __future__ import annotations

from typing import Any

import numpy as np


# ------------------------------------------------------------------------------------- spans
def span_scores(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict[str, Any]:
    """Span precision / recall / F1 (micro) and per type, with seqeval, over sentences in memory.

    ``scheme``: ``"bio"`` (IOB2, as conlleval scores it) or ``"bioes"`` (strict IOBES: a malformed
    span does not count). The evaluators get the same figures from summed :func:`span_counts`
    (:func:`span_report`).
    """
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    if scheme == "bioes":
        from seqeval.scheme import IOBES

        kwargs = {"mode": "strict", "scheme": IOBES}
    else:
        kwargs = {}
    report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
    per_type = {k: {m: float(v) for m, v in d.items()} for k, d in report.items() if not k.endswith(" avg")}
    return {
        "precision": float(precision_score(gold, pred, zero_division=0, **kwargs)),
        "recall": float(recall_score(gold, pred, zero_division=0, **kwargs)),
        "f1": float(f1_score(gold, pred, zero_division=0, **kwargs)),
        "per_type": per_type,
    }


def span_counts(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict[str, np.ndarray]:
    """``{span type: [gold spans, predicted spans, correct spans]}`` of some sentences, found by
    seqeval (``get_entities``: conlleval's BIO reading; ``Entities`` with strict IOBES for ``"bioes"``).

    Spans never cross sentences, so the counts of disjoint sets of sentences add up to the counts
    of their union, from which :func:`span_report` gives exactly :func:`span_scores`' figures.
    """
    if scheme == "bioes":
        from seqeval.scheme import IOBES, Entities

        true, predicted = Entities(gold, IOBES), Entities(pred, IOBES)
        out = {}
        for name in true.unique_tags | predicted.unique_tags:
            a, b = true.filter(name), predicted.filter(name)
            out[name] = np.array([len(a), len(b), len(a & b)], np.int64)
        return out
    from seqeval.metrics.sequence_labeling import get_entities

    spans: dict[str, tuple[set, set]] = {}
    for k, sentences in enumerate((gold, pred)):
        for name, start, end in get_entities([list(s) for s in sentences]):
            spans.setdefault(name, (set(), set()))[k].add((start, end))
    return {name: np.array([len(a), len(b), len(a & b)], np.int64) for name, (a, b) in spans.items()}


def sentence_span_counts(gold: list[list[str]], pred: list[list[str]], scheme: str) -> np.ndarray:
    """``[n_sentences, 3]`` int64: each sentence's (correct, wrongly predicted, missed) spans, i.e.
    (tp, fp, fn), over all span types, found as :func:`span_counts` finds them.

    Summed over sentences they are ``(correct, predicted - correct, gold - correct)`` of the
    per-type counts of :func:`span_counts` summed over types: the statistics of micro span F1
    (``keras_models.bootstrap.SCORES["f1"]``).
    """
    n = len(gold)
    if scheme == "bioes":
        from seqeval.scheme import IOBES, Entities

        true, predicted = Entities(gold, IOBES).entities, Entities(pred, IOBES).entities
        out = np.zeros((n, 3), np.int64)
        for i, (a, b) in enumerate(zip(true, predicted)):
            a, b = set(a), set(b)
            correct = len(a & b)
            out[i] = (correct, len(b) - correct, len(a) - correct)
        return out
    from seqeval.metrics.sequence_labeling import get_entities

    # get_entities reads the sentences as one sequence, an "O" after each: sentence i starts at starts[i]
    starts = np.concatenate([[0], np.cumsum([len(s) + 1 for s in gold], dtype=np.int64)])
    spans = []
    for sentences in (gold, pred):
        spans.append(set(get_entities([list(s) for s in sentences])))
    true, predicted = spans
    counts = []
    for group in (true & predicted, predicted - true, true - predicted):
        first = np.array([start for _, start, _ in group], np.int64)
        counts.append(np.bincount(np.searchsorted(starts, first, side="right") - 1, minlength=n)[:n])
    return np.stack(counts, axis=1).astype(np.int64)


def _prf(correct: np.ndarray, predicted: np.ndarray, true: np.ndarray):
    """Precision, recall, F1 as seqeval computes them (beta 1, ``zero_division=0``)."""

    def divide(numerator, denominator):
        denominator = denominator.copy()
        mask = denominator == 0
        denominator[mask] = 1
        result = numerator / denominator
        result[mask] = 0.0
        return result

    precision, recall = divide(correct, predicted), divide(correct, true)
    denom = 1.0 * precision + recall
    denom[denom == 0.0] = 1
    return precision, recall, (1 + 1.0) * precision * recall / denom


def span_report(counts: dict[str, np.ndarray]) -> dict[str, Any]:
    """:func:`span_scores`' result (micro P/R/F1, ``per_type``) from summed :func:`span_counts`."""
    names = sorted(counts)
    true, predicted, correct = (np.array([counts[n][i] for n in names], np.int64) for i in range(3))
    p, r, f = _prf(correct, predicted, true)
    per_type = {n: {"precision": float(p[i]), "recall": float(r[i]), "f1-score": float(f[i]),
                    "support": float(true[i])} for i, n in enumerate(names)}
    mp, mr, mf = _prf(np.array([correct.sum()]), np.array([predicted.sum()]), np.array([true.sum()]))
    return {"precision": float(mp[0]), "recall": float(mr[0]), "f1": float(mf[0]), "per_type": per_type}


# ------------------------------------------------------------------------ decoded sequences
def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Token-level Levenshtein distance (substitutions + deletions + insertions), via jiwer."""
    import jiwer

    if not reference:
        return len(hypothesis)
    if not hypothesis:
        return len(reference)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return out.substitutions + out.deletions + out.insertions


def error_counts(hypothesis: list[str], references: list[list[str]]) -> tuple[int, int, int]:
    """``(wrong, errors, length)`` of one output: 1 if it matches none of its references; the edit
    distance to the closest reference (0 on a match); that reference's length."""
    if not references:
        raise ValueError("every input needs at least one reference")
    best = min(references, key=lambda r: (edit_distance(r, hypothesis), len(r)))
    if hypothesis in references:
        return 0, 0, len(best)
    return 1, edit_distance(best, hypothesis), len(best)


def sequence_error_rates(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    """Word error rate and token (phoneme) error rate of outputs with one or more references each.

    ``wer``: the fraction of inputs whose output matches none of its references exactly (G2P's word
    error rate). ``per``: edit distance to the closest reference, summed, over the summed length of
    those references (phoneme error rate; character/word error rate for other targets).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference sets")
    wrong = errors = length = 0
    for hyp, refs in zip(hypotheses, references):
        w, e, n = error_counts(hyp, refs)
        wrong, errors, length = wrong + w, errors + e, length + n
    return {"wer": wrong / max(len(hypotheses), 1), "per": errors / max(length, 1)}


def _reference_streams(references: list[list[list[str]]], join: str) -> list[list[str]]:
    """sacrebleu's reference streams: stream ``k`` holds every input's ``k``-th reference (its first
    one where it has fewer, which changes no statistic)."""
    width = max(len(r) for r in references)
    return [[join.join(refs[k] if k < len(refs) else refs[0]) for refs in references] for k in range(width)]


def text_scores(hypotheses: list[list[str]], references: list[list[list[str]]], joiner: str = " ") -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu) for text-to-text outputs given as token lists.

    ``references[i]`` lists input ``i``'s references. BLEU counts n-grams of the target tokens (words,
    or characters for a character-level target); chrF reads the text the tokens make (joined with
    ``joiner``: ``""`` for characters). :class:`TextStatistics` gives the same figures from
    statistics summed over batches.
    """
    import sacrebleu

    bleu = sacrebleu.corpus_bleu([" ".join(h) for h in hypotheses], _reference_streams(references, " "),
                                 tokenize="none")
    chrf = sacrebleu.corpus_chrf([joiner.join(h) for h in hypotheses], _reference_streams(references, joiner))
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


class TextStatistics:
    """Corpus BLEU and chrF as :func:`text_scores` computes them, from sacrebleu's sufficient
    statistics (n-gram match and length counts per sentence) summed as outputs arrive, so no output
    or reference string is kept beyond the current block of ``block`` inputs.

    sacrebleu 2.x has no public call for one sentence's statistics; this uses the metrics' own
    ``_extract_corpus_statistics`` (what ``corpus_score`` sums) and ``_compute_score_from_stats``
    (what it scores the sum with), so the figures are exactly the corpus figures.

    With ``keep_items``, every input's own statistics are kept too (:meth:`items`: a few numbers
    per input, for per-item comparisons).
    """

    def __init__(self, joiner: str = " ", block: int = 256, keep_items: bool = False):
        from sacrebleu.metrics import BLEU, CHRF

        self.joiner, self.block = joiner, block
        self.bleu, self.chrf = BLEU(tokenize="none"), CHRF()  # corpus_bleu(..., tokenize="none"), corpus_chrf
        self._sums: dict[str, list | None] = {"bleu": None, "chrf": None}
        self._pending: list[tuple[list[str], list[list[str]]]] = []
        self._items: dict[str, list] | None = {"bleu": [], "chrf": []} if keep_items else None

    def add(self, hypothesis: list[str], references: list[list[str]]) -> None:
        self._pending.append((hypothesis, references))
        if len(self._pending) >= self.block:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        hyps, refs = [h for h, _ in self._pending], [r for _, r in self._pending]
        for name, metric, join in (("bleu", self.bleu, " "), ("chrf", self.chrf, self.joiner)):
            for stats in metric._extract_corpus_statistics([join.join(h) for h in hyps],
                                                           _reference_streams(refs, join)):
                total = self._sums[name]
                self._sums[name] = list(stats) if total is None else [a + b for a, b in zip(total, stats)]
                if self._items is not None:
                    self._items[name].append(list(stats))
        self._pending = []

    def items(self) -> dict[str, np.ndarray]:
        """Every input's statistics so far, in the order added (``keep_items=True``): ``bleu``
        ``[n, 10]`` as (matches[4], totals[4], hyp_len, ref_len), ``chrf`` ``[n, 18]`` as
        sacrebleu's [hyp, ref, match] per character order: the layouts of
        ``keras_models.bootstrap.SCORES``, whose sums score exactly as :meth:`scores`."""
        if self._items is None:
            raise ValueError("TextStatistics(keep_items=True) keeps each input's statistics")
        self._flush()
        bleu = np.asarray(self._items["bleu"], np.float64).reshape(-1, 10)
        chrf = np.asarray(self._items["chrf"], np.float64).reshape(-1, 18)
        return {"bleu": np.concatenate([bleu[:, 2:10], bleu[:, 0:2]], axis=1), "chrf": chrf}

    def scores(self) -> dict[str, float]:
        self._flush()
        out = {}
        for name, metric in (("bleu", self.bleu), ("chrf", self.chrf)):
            total = self._sums[name]
            out[name] = float(metric._compute_score_from_stats(list(total)).score) if total is not None else 0.0
        return out
