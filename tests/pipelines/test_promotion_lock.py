"""The promotion lock (:mod:`pipelines.tracking.lease`) and what promotion does with it, on a
temporary sqlite store: a held lock makes a promoter wait, an expired one is broken, an alias that
does not read back is a conflict, and a registration retried by the client leaves one version."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines import tracking
from pipelines.tracking import lease, registry


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    tracking.configure(store)
    return MlflowClient(tracking_uri=store, registry_uri=store)


def _run(store) -> str:
    with tracking.Tracker(store, "exp-lock") as t:
        return t.run_id


def _version(client, store, name) -> str:
    run_id = _run(store)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    return str(client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id).version)


def _names(client) -> list[str]:
    return sorted(m.name for m in client.search_registered_models())


def test_the_lock_is_a_registered_model_held_only_while_promoting(client, store):
    name = "lock-lifetime"
    v1 = _version(client, store, name)
    seen = []
    original = registry._promote

    def spying(c, lock, *args, **kwargs):
        seen.append((lock.name in _names(c), lock.still_held()))
        return original(c, lock, *args, **kwargs)

    registry._promote = spying
    try:
        assert tracking.promote(client, name, v1, "loss", 1.0, greater_is_better=False).promoted
    finally:
        registry._promote = original
    assert seen == [(True, True)]
    assert lease.lock_name(name) not in _names(client)


def test_a_held_lock_makes_a_promoter_wait_then_gives_up_naming_the_holder(client, store):
    name = "lock-held"
    v1 = _version(client, store, name)
    other = lease.PromotionLock(client, name).acquire()
    try:
        waiter = lease.PromotionLock(client, name, wait_s=1.0)
        started = time.monotonic()
        with pytest.raises(lease.PromotionLockTimeout, match=other.holder):
            waiter.acquire()
        assert time.monotonic() - started >= 1.0
    finally:
        other.release()
    assert tracking.promote(client, name, v1, "loss", 1.0, greater_is_better=False).promoted


def test_a_promoter_waits_for_the_holder_and_then_decides_on_the_new_champion(client, store):
    """The second promoter reads the champion after the first one released the lock: a candidate
    worse than the version the first one promoted does not take over."""
    name = "lock-order"
    v1, v2 = _version(client, store, name), _version(client, store, name)
    holder = lease.PromotionLock(client, name).acquire()
    result = {}

    def second():
        result["d"] = tracking.promote(store, name, v2, "loss", 2.0, greater_is_better=False)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive()  # waiting for the lock
    # what the holder does while the other waits: promote v1 (loss 1.0) under the lock it holds
    registry._promote(client, holder, name, v1, "loss", 1.0, False)
    holder.release()
    thread.join(60)
    assert not result["d"].promoted and result["d"].champion_version_before == v1
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1


def test_an_expired_lock_is_broken(client, store):
    name = "lock-stale"
    v1 = _version(client, store, name)
    dead = lease.PromotionLock(client, name, lease_s=0.5).acquire()  # its holder "dies": never released
    time.sleep(1.0)
    decision = tracking.promote(client, name, v1, "loss", 1.0, greater_is_better=False)
    assert decision.promoted and not dead.still_held()
    assert lease.lock_name(name) not in _names(client)


def test_an_alias_that_does_not_read_back_is_a_conflict(client, store, monkeypatch):
    """Something that sets aliases without the lock (a person in the UI, an old client) between the
    set and the read-back: the promotion fails loudly instead of logging a decision that is not true."""
    name = "lock-conflict"
    v1, v2 = _version(client, store, name), _version(client, store, name)
    original = MlflowClient.set_registered_model_alias

    def meddled(self, model, alias, version):
        original(self, model, alias, v1 if version == v2 else version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", meddled)
    assert tracking.promote(client, name, v1, "loss", 2.0, greater_is_better=False).promoted
    with pytest.raises(registry.PromotionConflict, match=f"version {v1} right after it was set to {v2}"):
        tracking.promote(client, name, v2, "loss", 1.0, greater_is_better=False)


def test_a_retried_registration_keeps_one_version_of_the_run(client, store, monkeypatch):
    """The client retries a POST whose answer was lost after the server had carried it out: the run
    then has two versions; ``register_once`` keeps the first and deletes the other."""
    name = "lock-retried"
    run_id = _run(store)

    def twice(model_uri, model_name, tracking_uri):  # what the server did with the first POST and its retry
        client.create_registered_model(model_name)
        for _ in range(2):
            mv = client.create_model_version(model_name, source=model_uri, run_id=run_id)
        return str(mv.version)

    monkeypatch.setattr(registry, "register_model", twice)
    version, decision, new = registry.register_once(store, f"runs:/{run_id}/model", run_id, name, "loss", 1.0, False)
    assert (version, new, decision["promoted"]) == ("1", True, True)
    assert [str(mv.version) for mv in registry.versions_from_run(client, name, run_id)] == ["1"]
