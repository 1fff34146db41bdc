"""Promotion by paired bootstrap (``promotion.rule: paired_bootstrap``) on a temporary sqlite store,
with constructed per-item statistics whose answer is known: identical models do not promote, a
clearly better one does, a tiny gain on few items does not (though ``any_improvement`` would), and a
champion without statistics, with too few shared items or with a damaged file is handled as said."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from keras_models.item_stats import ItemStats
from pipelines import tracking
from pipelines.tracking.comparison import PromotionRule, items_artifact


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    tracking.configure(store)
    return MlflowClient(tracking_uri=store, registry_uri=store)


def _items(correct, keys=None) -> ItemStats:
    correct = np.asarray(correct, dtype=float)
    keys = np.array(keys if keys is not None else [f"item-{i}" for i in range(len(correct))])
    return ItemStats(keys, {"accuracy": np.stack([correct, np.ones_like(correct)], axis=1)})


def _version(client, store, name, items: ItemStats | None, tmp_path) -> tuple[str, str, str]:
    """A version whose run logged ``items`` as ``evaluation/items-valid.npz``; returns (version, run id,
    the local file: the candidate's side)."""
    local = ""
    with tracking.Tracker(store, "exp-rule") as t:
        run_id = t.run_id
        if items is not None:
            local = tmp_path / run_id / "items-valid.npz"
            local.parent.mkdir(parents=True)
            items.save(local)
            t.log_artifact(local, "evaluation")
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
    return str(mv.version), run_id, str(local)


def _rule(candidate_file, **kw) -> PromotionRule:
    return PromotionRule(rule="paired_bootstrap", split="valid", statistic="accuracy",
                         candidate_items=candidate_file or None, **kw)


def _promote(client, name, version, value, candidate_file, **kw):
    return tracking.promote(client, name, version, "val_accuracy", value, greater_is_better=True,
                            rule=_rule(candidate_file, **kw))


def test_identical_models_do_not_promote_and_a_clearly_better_one_does(client, store, tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(500) < 0.6).astype(float)
    name = "rule-basic"
    v1, _, f1 = _version(client, store, name, _items(base), tmp_path)
    assert _promote(client, name, v1, base.mean(), f1).promoted  # the first version
    v2, run2, f2 = _version(client, store, name, _items(base), tmp_path)
    same = _promote(client, name, v2, base.mean(), f2)
    assert not same.promoted and "not better" in same.reason
    assert same.comparison["p_better"] == 0.0 and same.comparison["n_items"] == 500
    better = base.copy()
    better[np.flatnonzero(base == 0)[:100]] = 1.0  # 100 more items right: 60% → 80%
    v3, run3, f3 = _version(client, store, name, _items(better), tmp_path)
    won = _promote(client, name, v3, better.mean(), f3)
    assert won.promoted and won.comparison["p_better"] >= 0.95 and won.comparison["ci_low"] > 0
    assert str(client.get_model_version_by_alias(name, "champion").version) == v3
    # both scores, the difference, its interval and the decision are on the version and the run
    tags = client.get_model_version(name, v3).tags
    assert float(tags["promotion.difference"]) == pytest.approx(0.2)
    assert {"promotion.ci_low", "promotion.ci_high", "promotion.p_better", "promotion.rule"} <= set(tags)
    run = client.get_run(run3).data
    assert run.metrics["promotion.candidate"] == pytest.approx(better.mean())
    assert run.metrics["promotion.champion"] == pytest.approx(base.mean())
    assert run.tags["promotion.decision"] == "champion"


def test_a_tiny_gain_on_few_items_is_noise(client, store, tmp_path):
    base = np.array([1.0, 0.0] * 15)  # 30 items, 50%
    name = "rule-tiny"
    v1, _, f1 = _version(client, store, name, _items(base), tmp_path)
    _promote(client, name, v1, base.mean(), f1)
    gain = base.copy()
    gain[1] = 1.0  # one more item right: 50% → 53.3%
    v2, _, f2 = _version(client, store, name, _items(gain), tmp_path)
    noise = _promote(client, name, v2, gain.mean(), f2)
    assert not noise.promoted and noise.alias == "challenger"
    assert 0 < noise.comparison["p_better"] < 0.95
    # the old rule would have taken it
    v3, _, f3 = _version(client, store, name, _items(gain), tmp_path)
    old = tracking.promote(client, name, v3, "val_accuracy", gain.mean(), greater_is_better=True,
                           rule=PromotionRule(rule="any_improvement"))
    assert old.promoted and "beats" in old.reason


def test_a_champion_without_statistics_is_compared_by_figure(client, store, tmp_path):
    name = "rule-old-champion"
    v1, _, _ = _version(client, store, name, None, tmp_path)  # registered before per-item statistics
    _promote(client, name, v1, 0.5, None)
    v2, _, f2 = _version(client, store, name, _items([1.0] * 30), tmp_path)
    d = _promote(client, name, v2, 0.6, f2)
    assert d.promoted and "by figure" in d.reason and "logged no per-item statistics" in d.reason


def test_too_few_shared_items_do_not_promote(client, store, tmp_path):
    name = "rule-other-items"
    v1, _, f1 = _version(client, store, name, _items([0.0] * 40, [f"old-{i}" for i in range(40)]), tmp_path)
    _promote(client, name, v1, 0.0, f1)
    keys = [f"old-{i}" for i in range(10)] + [f"new-{i}" for i in range(30)]
    v2, _, f2 = _version(client, store, name, _items([1.0] * 40, keys), tmp_path)
    d = _promote(client, name, v2, 1.0, f2)
    assert not d.promoted and "only 10 of the candidate's 40 valid items" in d.reason


def test_a_damaged_champion_file_is_an_error_naming_it(client, store, tmp_path):
    name = "rule-damaged"
    v1, run1, f1 = _version(client, store, name, _items([1.0, 0.0] * 20), tmp_path)
    _promote(client, name, v1, 0.5, f1)
    bad = tmp_path / "bad" / "items-valid.npz"
    bad.parent.mkdir()
    np.savez(bad, keys=np.array([object()], dtype=object), accuracy=np.zeros((1, 2)))  # a pickled array
    client.log_artifact(run1, str(bad), "evaluation")  # replaces the champion's file
    v2, _, f2 = _version(client, store, name, _items([1.0] * 40), tmp_path)
    with pytest.raises(ValueError, match="items-valid.npz"):
        _promote(client, name, v2, 1.0, f2)
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1
    assert items_artifact("valid") == "evaluation/items-valid.npz"
