"""The registry shared by several machines, on a real ``mlflow server`` on loopback (started and
stopped here): simultaneous promotions of one registered model leave exactly one champion, the best,
with every decision logged; the client rides out a server that stops for a few seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from services import mlflow_server, show_logs_on_failure

REPO_ROOT = Path(__file__).resolve().parents[2]

# One promoter (a "machine"): a run with a logged model, registered and promoted through
# ``register_once`` at the agreed instant, printing its decision as JSON.
PROMOTER = textwrap.dedent("""
    import json, sys, time
    import mlflow
    from pipelines import tracking
    from pipelines.tracking import registry

    uri, name, value, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    tracking.configure(uri)
    with tracking.Tracker(uri, "concurrent-promotions") as t:
        run_id = t.run_id
        model = mlflow.initialize_logged_model(name="model", source_run_id=run_id)
        mlflow.finalize_logged_model(model.model_id, "READY")
    time.sleep(max(0.0, start_at - time.time()))
    version, decision, new = registry.register_once(uri, f"models:/{model.model_id}", run_id, name, "loss", value,
                                                    False)
    print(json.dumps({"run_id": run_id, "version": version, "value": value, "decision": decision, "new": new}))
""")


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


@pytest.mark.timeout(240)
def test_simultaneous_promotions_leave_one_champion_the_best(server):
    """Four processes register and promote versions of one model at the same instant (losses in an
    order that makes a lost update likely without the lock): four versions, one champion with the
    lowest loss, a decision on every version and every run, and no lock left behind."""
    name = "contested"
    values = [3.0, 1.0, 4.0, 2.0]
    start_at = time.time() + 12  # every process has imported mlflow and made its run by then
    procs = [subprocess.Popen([sys.executable, "-c", PROMOTER, server.uri, name, str(v), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO_ROOT)
             for v in values]
    results = []
    with show_logs_on_failure([server.service]):
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda mv: int(mv.version))
    assert len(versions) == 4 and sorted(r["version"] for r in results) == ["1", "2", "3", "4"]
    champion = client.get_model_version_by_alias(name, "champion")
    best = min(results, key=lambda r: r["value"])
    assert str(champion.version) == best["version"]
    holders = [mv.version for mv in versions if "champion" in client.get_model_version(name, mv.version).aliases]
    assert holders == [champion.version]
    for result in results:
        mv = client.get_model_version(name, result["version"])
        assert mv.tags["promotion.decision"] in ("champion", "challenger")
        assert mv.tags["promotion.decision"] == result["decision"]["alias"]
        assert client.get_run(result["run_id"]).data.tags["promotion.version"] == result["version"]
    # the decisions form one history: each promoted version beat the champion it saw, which was the
    # previous one to be promoted (the promotions ran one at a time)
    promoted = [r for r in results if r["decision"]["promoted"]]
    before = {r["decision"]["champion_version_before"] for r in promoted}
    assert None in before and len(before) == len(promoted)
    assert not [m.name for m in client.search_registered_models() if m.name.endswith(".promotion-lock")]


# ------------------------------------------------------------------------ `rnnflow run`s at once
LINES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the mat was on the log"]
RNNFLOW = str(Path(sys.executable).with_name("rnnflow"))


def _run_config(root: Path, name: str, model: str, uri: str, seed: int = 0, epochs: int = 2, **tracking) -> Path:
    """A tiny language-model config with a work directory and prepared data of its own (as on
    another machine)."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(LINES * 30) + "\n", encoding="utf-8")
    raw = {
        "name": name, "work_dir": str(root / "runs"),
        "data": {"dataset": "text", "files": [str(corpus)], "output_dir": str(root / "data"),
                 "split": {"valid": 0.15, "test": 0.15}},
        "model": {"cell": "gru", "num_layers": 1, "embedding_dim": 8, "hidden_dim": 8},
        "training": {"batch_size": 4, "bptt": 5, "epochs": epochs, "eval_batch_size": 2, "jit_compile": False,
                     "seed": seed, "optimizer": {"name": "adam", "learning_rate": 0.02}, "log_every_steps": 5},
        "tracking": {"tracking_uri": uri, "experiment": "shared", "registered_model": model, **tracking},
        "generate": {"prompt": "the cat", "max_tokens": 5, "temperature": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start_run(config: Path) -> subprocess.Popen:
    return subprocess.Popen([RNNFLOW, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=config.parent)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out


@pytest.mark.timeout(420)
def test_runs_at_once_against_one_server_lose_nothing(server, tmp_path):
    """Three `rnnflow run`s at once: two of one registered model from different work directories
    (different seeds, so different models), one of another. Every version is there, ``shared-lm`` has
    exactly one champion, each run logged its decision, and the second promotion was a paired
    bootstrap on the held-out items the two share (each run logged its per-item statistics)."""
    configs = [_run_config(tmp_path / "a", "lm-a", "shared-lm", server.uri, seed=0),
               _run_config(tmp_path / "b", "lm-b", "shared-lm", server.uri, seed=1),
               _run_config(tmp_path / "c", "lm-c", "other-lm", server.uri)]
    with show_logs_on_failure([server.service]):
        procs = [_start_run(c) for c in configs]
        for proc in procs:
            _finish(proc)
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    shared = sorted(client.search_model_versions("name='shared-lm'"), key=lambda mv: int(mv.version))
    assert [mv.version for mv in shared] == ["1", "2"]
    assert len(client.search_model_versions("name='other-lm'")) == 1
    assert str(client.get_model_version_by_alias("other-lm", "champion").version) == "1"
    holders = [mv.version for mv in shared if "champion" in client.get_model_version("shared-lm", mv.version).aliases]
    assert len(holders) == 1
    decisions = {mv.version: client.get_model_version("shared-lm", mv.version).tags for mv in shared}
    assert sorted(tags["promotion.decision"] for tags in decisions.values()).count("champion") >= 1
    second = decisions["2"]
    assert second["promotion.rule"] == "paired_bootstrap" and int(second["promotion.n_items"]) > 0
    for mv in shared:
        run = client.get_run(mv.run_id)
        assert run.data.tags["promotion.version"] == mv.version
        assert "evaluation/items-valid.npz" in {a.path for a in client.list_artifacts(mv.run_id, "evaluation")}
    assert not [m.name for m in client.search_registered_models() if m.name.endswith(".promotion-lock")]


@pytest.mark.timeout(420)
def test_a_server_that_stops_for_seconds_mid_run_loses_nothing(server, tmp_path):
    """The tracking server stops while a run is training and comes back 5 s later on the same port:
    MLflow's client retries (``tracking.http_retries`` / ``http_backoff``), the run finishes, every
    epoch's metrics are logged and the model is registered once."""
    config = _run_config(tmp_path / "blip", "lm-blip", "blip-lm", server.uri, epochs=6, http_retries=8,
                         http_backoff=1)
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    with show_logs_on_failure([server.service]):
        proc = _start_run(config)
        deadline = time.monotonic() + 240
        run_id = None
        while time.monotonic() < deadline and proc.poll() is None:  # wait for training to log steps
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                      "tags.`rnnflow.config` = 'lm-blip'")
            if runs and "step/train_loss" in runs[0].data.metrics:
                run_id = runs[0].info.run_id
                break
            time.sleep(0.5)
        assert run_id is not None and proc.poll() is None, "the run did not start training in time"
        server.stop()
        time.sleep(5)
        server.start()
        _finish(proc)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "val_perplexity")
    assert sorted({m.step for m in history}) == list(range(1, 8))  # 6 epochs, then the final evaluation
    versions = client.search_model_versions("name='blip-lm'")
    assert [mv.version for mv in versions] == ["1"] and versions[0].run_id == run_id
