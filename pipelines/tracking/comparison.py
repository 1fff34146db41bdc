"""Is the challenger really better? A paired bootstrap of a candidate against the champion on the
held-out items they share (:mod:`keras_models.bootstrap`), from the per-item statistics each run
logs as ``evaluation/items-<split>.npz`` (:class:`keras_models.item_stats.ItemStats`).

The champion's file comes back from the registry's artifact store, so it is validated as it is read
(``ItemStats.load``: no pickles, known statistics, shapes, finite values). Items are paired by a
content key (the item's tokens and gold labels), so a champion evaluated on an older version of the
corpus is compared on the items both held out; fewer than ``min_items`` shared items, and the two
cannot be compared.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

PAIRED_BOOTSTRAP = "paired_bootstrap"
ANY_IMPROVEMENT = "any_improvement"
ITEMS_FOLDER = "evaluation"


def items_artifact(split: str) -> str:
    """Where a run keeps a split's per-item statistics (relative to its artifact root)."""
    return f"{ITEMS_FOLDER}/items-{split}.npz"


@dataclasses.dataclass(frozen=True)
class PromotionRule:
    """How a candidate must beat the champion.

    Args:
        rule: ``paired_bootstrap`` (better with ``confidence`` on the shared held-out items) or
            ``any_improvement`` (a better figure by any amount).
        confidence: the fraction of bootstrap resamples in which the candidate must be better.
        samples: bootstrap resamples.
        seed: the resampling seed (decisions are reproducible).
        min_items: fewer shared items than this, and the models are not compared (no promotion).
        split: the split the metric is computed on (``valid`` for ``val_…``).
        statistic: the metric's per-item statistic (``perplexity`` for ``val_perplexity``).
        candidate_items: the candidate's per-item statistics file (local), or ``None``.
    """

    rule: str = ANY_IMPROVEMENT
    confidence: float = 0.95
    samples: int = 1000
    seed: int = 0
    min_items: int = 20
    split: str = "valid"
    statistic: str = ""
    candidate_items: str | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`compare`: ``better`` (``None``: not comparable, with ``reason``) and the
    comparison's figures (``PairedComparison.to_dict()`` plus ``n_candidate_items``)."""

    better: bool | None
    reason: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


def _champion_items(client: MlflowClient, run_id: str, split: str):
    """The champion run's per-item statistics, validated; ``None`` if the run logged none."""
    from keras_models.item_stats import ItemStats

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, items_artifact(split), tmp)
        except (MlflowException, OSError):
            return None
        if not os.path.isfile(local):
            return None
        return ItemStats.load(local)


def compare(client: MlflowClient, rule: PromotionRule, champion_run_id: str | None, champion_version: str) -> Verdict:
    """Paired bootstrap of ``rule.candidate_items`` against the champion run's statistics."""
    from keras_models import bootstrap
    from keras_models.item_stats import ItemStats

    if not rule.candidate_items or not os.path.isfile(rule.candidate_items):
        return Verdict(None, "the candidate has no per-item statistics")
    candidate = ItemStats.load(rule.candidate_items)
    champion = _champion_items(client, champion_run_id, rule.split) if champion_run_id else None
    if champion is None:
        return Verdict(None, f"champion version {champion_version} logged no per-item statistics "
                             f"({items_artifact(rule.split)})")
    name = rule.statistic
    if name not in candidate.stats or name not in champion.stats:
        return Verdict(None, f"statistic {name!r} is missing from the "
                             f"{'candidate' if name not in candidate.stats else 'champion'}'s per-item statistics")
    cand, champ, shared = bootstrap.pair_items(candidate.keys, candidate.stats[name], champion.keys,
                                               champion.stats[name])
    figures = {"n_candidate_items": len(candidate), "n_champion_items": len(champion), "n_items": shared}
    if shared < rule.min_items:
        return Verdict(None, f"only {shared} of the candidate's {len(candidate)} {rule.split} items are among champion "
                             f"version {champion_version}'s (promotion.min_items is {rule.min_items})", figures)
    result = bootstrap.paired_bootstrap(cand, champ, name, samples=rule.samples, level=rule.confidence,
                                        seed=rule.seed)
    figures.update(result.to_dict())
    better = bootstrap.better_with_confidence(result, rule.confidence)
    what = "better" if better else "not better"
    reason = (f"{name} on {shared} shared {rule.split} items: {result.candidate:.6g} vs champion version "
              f"{champion_version} {result.champion:.6g}; {what} with {rule.confidence:.0%} confidence "
              f"(better in {result.p_better:.1%} of {result.samples} paired bootstrap resamples; "
              f"{result.level:.0%} interval of the improvement [{result.ci_low:.4g}, {result.ci_high:.4g}])")
    return Verdict(better, reason, figures)
