"""The paired bootstrap and its scores: scores of summed statistics equal the libraries' figures
(sacrebleu, seqeval, scikit-learn), the comparison finds a real gain and ignores noise, pairing by key."""

import math
import random

import numpy as np
import pytest

from keras_models.bootstrap import (
    SCORES,
    PairedComparison,
    better_with_confidence,
    pair_items,
    paired_bootstrap,
    resolve_score,
)
from keras_models.metrics import TextStatistics, sentence_span_counts, span_scores, text_scores


def _right(flags) -> np.ndarray:
    """Accuracy statistics (correct, 1) of items right or wrong."""
    flags = np.asarray(flags, np.float64)
    return np.stack([flags, np.ones_like(flags)], axis=1)


# ------------------------------------------------------------------------------------- scores
def test_bleu_and_chrf_of_summed_sentence_statistics_equal_sacrebleu_corpus_scores():
    rng = random.Random(3)
    words = "a b c d e f g h".split()
    refs = [[[rng.choice(words) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 3))]
            for _ in range(150)]
    hyps = [r[0][: rng.randint(0, len(r[0]))] + [rng.choice(words)] * rng.randint(0, 2) for r in refs]
    for joiner in (" ", ""):
        stats = TextStatistics(joiner, block=11, keep_items=True)
        for h, r in zip(hyps, refs):
            stats.add(h, r)
        items, want = stats.items(), text_scores(hyps, refs, joiner)
        assert items["bleu"].shape == (150, 10) and items["chrf"].shape == (150, 18)
        assert float(SCORES["bleu"](items["bleu"].sum(0))) == want["bleu"]  # identical, not approximately
        assert float(SCORES["chrf"](items["chrf"].sum(0))) == want["chrf"]
        assert stats.scores() == want
    # corner cases: no match at all, a short corpus (brevity penalty), no 4-grams (BLEU 0)
    for h, r in (([["x"]], [[["a", "b"]]]), ([["a", "b"]], [[["a", "b", "c", "d", "e"]]]),
                 ([["a", "b", "c"]], [[["a", "b", "c"]]]), ([[]], [[["a"]]])):
        stats = TextStatistics(" ", keep_items=True)
        stats.add(h[0], r[0])
        assert float(SCORES["bleu"](stats.items()["bleu"].sum(0))) == text_scores(h, r)["bleu"]
        assert float(SCORES["chrf"](stats.items()["chrf"].sum(0))) == text_scores(h, r)["chrf"]


def test_span_f1_of_summed_sentence_counts_equals_seqeval():
    rng = np.random.default_rng(0)
    for scheme, tags in (("bio", ["B-A", "I-A", "B-B", "I-B", "O", "O"]),
                         ("bioes", ["B-A", "I-A", "E-A", "S-A", "B-B", "E-B", "O", "O"])):
        gold = [[str(t) for t in rng.choice(tags, rng.integers(0, 9))] for _ in range(200)]
        pred = [[str(rng.choice(tags)) if rng.random() < 0.4 else t for t in g] for g in gold]
        counts = sentence_span_counts(gold, pred, scheme)
        assert counts.shape == (200, 3)
        want = span_scores(gold, pred, scheme)
        for name in ("precision", "recall", "f1"):
            assert float(SCORES[name](counts.sum(0))) == want[name]
        for i in range(0, 200, 37):  # every sentence's counts are its own
            tp, fp, fn = counts[i]
            alone = sentence_span_counts(gold[i : i + 1], pred[i : i + 1], scheme)[0]
            np.testing.assert_array_equal(alone, [tp, fp, fn])


def test_macro_f1_accuracy_and_perplexity_of_sums():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    classes = 11  # more than 8: numpy's pairwise summation path
    gold = rng.integers(0, classes, 300)
    pred = np.where(rng.random(300) < 0.5, gold, rng.integers(0, classes - 2, 300))
    per = np.zeros((300, classes, 3))
    right = gold == pred
    per[np.flatnonzero(right), gold[right], 0] = 1
    per[np.flatnonzero(~right), pred[~right], 1] = 1
    per[np.flatnonzero(~right), gold[~right], 2] = 1
    sums = per.reshape(300, -1).sum(0)
    assert float(SCORES["macro_f1"](sums)) == float(
        f1_score(gold, pred, labels=list(range(classes)), average="macro", zero_division=0))
    assert float(SCORES["accuracy"](_right(right).sum(0))) == float(np.mean(right))
    nll = rng.random((50, 2)) * [30.0, 0] + [0, 7]
    assert float(SCORES["perplexity"](nll.sum(0))) == pytest.approx(math.exp(nll[:, 0].sum() / 350), rel=1e-12)
    assert float(SCORES["bpc"](nll.sum(0))) == pytest.approx(nll[:, 0].sum() / 350 / math.log(2), rel=1e-12)
    assert float(SCORES["wer"]([3.0, 0.0])) == 3.0  # max(words, 1), as the evaluators divide


def test_scores_are_vectorised_over_leading_axes():
    rng = np.random.default_rng(2)
    for name, k in (("bleu", 10), ("chrf", 18), ("f1", 3), ("macro_f1", 12), ("perplexity", 2)):
        sums = rng.integers(0, 6, (4, 3, k)).astype(np.float64)
        got = SCORES[name](sums)
        assert got.shape == (4, 3)
        for i in range(4):
            for j in range(3):
                assert got[i, j] == float(SCORES[name](sums[i, j]))


def test_score_names_with_a_variant_prefix_and_widths():
    assert resolve_score("beam5_wer").name == "wer"
    assert resolve_score("beam5_macro_f1").name == "macro_f1"
    assert resolve_score("f1").name == "f1"
    with pytest.raises(ValueError, match="unknown score 'rouge'"):
        resolve_score("rouge")
    assert SCORES["macro_f1"].check_width(7) and not SCORES["macro_f1"].check_width(9)
    assert all(isinstance(s.greater_is_better, bool) and s.doc for s in SCORES.values())


# -------------------------------------------------------------------------------- the comparison
def test_identical_models_are_never_better():
    stats = _right(np.random.default_rng(0).random(500) < 0.7)
    result = paired_bootstrap(stats, stats.copy(), "accuracy", samples=300)
    assert result.difference == 0.0 and result.ci_low == result.ci_high == 0.0
    assert result.p_better == 0.0
    assert not better_with_confidence(result, 0.95) and not better_with_confidence(result, 0.01)


def test_a_clearly_better_candidate_on_enough_items_is_better_at_95():
    rng = np.random.default_rng(1)
    champ_right = rng.random(400) < 0.7
    cand_right = champ_right | (rng.random(400) < 0.4)  # fixes a good part of the champion's errors
    result = paired_bootstrap(_right(cand_right), _right(champ_right), "accuracy", samples=1000, seed=3)
    assert result.candidate > result.champion
    assert result.difference == pytest.approx(np.mean(cand_right) - np.mean(champ_right))
    assert result.ci_low > 0 and result.p_better == 1.0
    assert better_with_confidence(result, 0.95)
    # lower is better: the sign flips, so a lower error rate is a positive difference
    errors = paired_bootstrap(_right(~cand_right), _right(~champ_right), "wer", samples=1000, seed=3)
    assert errors.difference == pytest.approx(result.difference) and not errors.greater_is_better
    assert better_with_confidence(errors, 0.95)


def test_a_tiny_gain_on_few_items_is_not_better():
    champ = np.array([1] * 14 + [0] * 6, bool)
    cand = champ.copy()
    cand[15] = True  # one more right answer out of 20
    cand[3] = False
    cand[16] = True  # ... and one that trades places
    result = paired_bootstrap(_right(cand), _right(champ), "accuracy", samples=2000, seed=0)
    assert result.difference == pytest.approx(0.05)
    assert result.ci_low < 0 < result.ci_high
    assert 0 < result.p_better < 0.95 and not better_with_confidence(result, 0.95)


def test_the_interval_contains_the_true_difference():
    rng = np.random.default_rng(5)
    n = 3000
    difficulty = rng.random(n)
    champ = difficulty < 0.6  # true accuracy 0.6
    cand = difficulty < 0.65  # true accuracy 0.65: true difference 0.05
    result = paired_bootstrap(_right(cand), _right(champ), "accuracy", samples=1000, level=0.95, seed=1)
    assert result.ci_low < 0.05 < result.ci_high
    assert result.ci_low < result.difference < result.ci_high


def test_pairing_narrows_the_interval_when_items_vary_a_lot():
    rng = np.random.default_rng(6)
    n = 300
    hardness = rng.lognormal(0, 1.5, n)  # very unequal sentences
    lengths = rng.integers(5, 40, n).astype(np.float64)
    champ = np.stack([hardness * lengths, lengths], axis=1)
    cand = np.stack([0.97 * hardness * lengths * rng.uniform(0.98, 1.02, n), lengths], axis=1)
    paired = paired_bootstrap(cand, champ, "perplexity", samples=500, seed=2)
    # unpaired: each model's items drawn independently
    draw = np.random.default_rng(2)
    fn = SCORES["perplexity"].fn
    unpaired = [fn(champ[draw.integers(0, n, n)].sum(0)) - fn(cand[draw.integers(0, n, n)].sum(0)) for _ in range(500)]
    low, high = np.quantile(unpaired, [0.025, 0.975])
    assert (paired.ci_high - paired.ci_low) < (high - low) / 5
    assert better_with_confidence(paired, 0.95) and low < 0  # unpaired, the gain would be lost in the noise


def test_the_comparison_is_deterministic_for_a_seed():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 4, (60, 3)).astype(float), rng.integers(0, 4, (60, 3)).astype(float)
    one, two = paired_bootstrap(a, b, "f1", samples=200, seed=4), paired_bootstrap(a, b, "f1", samples=200, seed=4)
    assert one == two
    assert paired_bootstrap(a, b, "f1", samples=200, seed=5) != one
    d = one.to_dict()
    assert d["score"] == "f1" and d["n_items"] == 60 and d["samples"] == 200 and set(d) == set(
        PairedComparison.__dataclass_fields__)


def test_large_item_counts_are_resampled_in_chunks(monkeypatch):
    from keras_models import bootstrap

    rng = np.random.default_rng(8)
    a, b = _right(rng.random(500) < 0.6), _right(rng.random(500) < 0.5)
    whole = paired_bootstrap(a, b, "accuracy", samples=64, seed=0)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", 500 * 7)  # 7 resamples at a time
    chunked = paired_bootstrap(a, b, "accuracy", samples=64, seed=0)
    assert chunked.samples == 64 and chunked.candidate == whole.candidate
    assert chunked.p_better == pytest.approx(whole.p_better, abs=0.05)


def test_bad_inputs_are_errors_that_say_what():
    a = _right([1, 0, 1])
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap(a, a[:2], "accuracy")
    with pytest.raises(ValueError, match="unknown score"):
        paired_bootstrap(a, a, "rouge")
    with pytest.raises(ValueError, match="n_items == 0"):
        paired_bootstrap(a[:0], a[:0], "accuracy")
    with pytest.raises(ValueError, match="k=3 statistics"):
        paired_bootstrap(a, a, "f1")
    with pytest.raises(ValueError, match="2-D"):
        paired_bootstrap(a[:, 0], a[:, 0], "accuracy")
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(a * np.nan, a, "accuracy")
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, a, "accuracy", level=1.0)
    with pytest.raises(ValueError, match="confidence"):
        better_with_confidence(paired_bootstrap(a, a, "accuracy", samples=10), 1.5)


# ------------------------------------------------------------------------------------ pairing
def test_pair_items_joins_by_key_occurrence_in_the_candidates_order():
    cand_keys = np.array(["a", "b", "a", "c", "d"])
    cand = np.arange(10, dtype=float).reshape(5, 2)
    champ_keys = np.array(["c", "a", "x", "a", "a", "b"])
    champ = 100 + np.arange(12, dtype=float).reshape(6, 2)
    got_cand, got_champ, shared = pair_items(cand_keys, cand, champ_keys, champ)
    assert shared == 4  # a (twice), b, c; d and x have no partner, the champion's third "a" neither
    np.testing.assert_array_equal(got_cand, cand[[0, 1, 2, 3]])
    np.testing.assert_array_equal(got_champ, champ[[1, 5, 3, 0]])
    none = pair_items(cand_keys, cand, np.array(["z"]), champ[:1])
    assert none[2] == 0 and none[0].shape == (0, 2)
    with pytest.raises(ValueError, match="one row per key"):
        pair_items(cand_keys, cand[:3], champ_keys, champ)
