"""pipelines.tracking on temporary sqlite stores: runs, the disabled tracker, Keras string models,
registry versions and alias promotion."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
import yaml
from matplotlib.figure import Figure
from mlflow import MlflowClient

from pipelines import tracking
from pipelines.config import parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["the cat sat on the mat", "a dog", "the dog sat"]


VOCAB = ["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"]


def string_model(seed: int = 0) -> keras.Model:
    """Raw strings → 3 scores: rnnflow's TextToIds (tokenizer inside the graph) + Keras layers."""
    from keras_models.export import TextToIds
    from preprocessing.tokenizers import TokenizerConfig

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(), dtype="string", name="text")
    x = TextToIds(TokenizerConfig().to_dict(), VOCAB, append_eos=False)(inputs)
    x = keras.layers.Embedding(len(VOCAB), 4)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def store(store_root) -> str:
    """One sqlite store shared by the tests (each uses its own experiment and model names):
    making a store runs MLflow's migrations, which takes seconds."""
    return f"sqlite:///{store_root}/mlflow_runs/mlflow.db"


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    tracking.configure(store)
    return MlflowClient(tracking_uri=store, registry_uri=store)


# ---------------------------------------------------------------------------------------------
# configuration and params


def test_configure_creates_the_database_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = "sqlite:///nested/dir/mlflow.db"
    assert tracking.configure(uri) == uri
    assert (tmp_path / "nested" / "dir").is_dir()
    assert mlflow.get_tracking_uri() == uri
    assert mlflow.get_registry_uri() == uri
    assert tracking.default_artifact_location(uri) == str(tmp_path / "nested" / "dir" / "artifacts")
    assert tracking.default_artifact_location(f"sqlite:///{tmp_path}/abs.db") == str(tmp_path / "artifacts")
    assert tracking.default_artifact_location("http://localhost:5000") is None
    assert tracking.experiment_artifact_location(uri, "ptb lm/v2") == str(tmp_path / "nested" / "dir" / "artifacts" / "ptb_lm_v2")
    assert tracking.experiment_artifact_location("http://localhost:5000", "x") is None


def test_flatten_params_dots_lists_none_and_truncation():
    flat = tracking.flatten_params(
        {"training": {"optimizer": {"learning_rate": 0.5}, "devices": ["a", "b"], "x": None}, "long": "y" * 10_000}
    )
    assert flat["training.optimizer.learning_rate"] == "0.5"
    assert flat["training.devices"] == "[a, b]"
    assert flat["training.x"] == "None"
    assert len(flat["long"]) == tracking.MAX_PARAM_VALUE_LENGTH
    assert flat["long"].endswith("[truncated]")


# ---------------------------------------------------------------------------------------------
# runs


def test_run_logs_params_metrics_artifacts(store, store_root, tmp_path, monkeypatch):
    monkeypatch.chdir(store_root)  # the default, relative store URI (the same database as `store`)
    uri = "sqlite:///mlflow_runs/mlflow.db"
    config = parse_config({"name": "quick", "training": {"optimizer": {"learning_rate": 0.25}}})
    extra = tmp_path / "vocab.txt"
    extra.write_text("<pad>\n<unk>\n", encoding="utf-8")
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"task": "lm"}', encoding="utf-8")
    fig = Figure()
    fig.add_subplot(1, 1, 1).plot([1, 2], [3, 4])

    with tracking.Tracker(uri, "exp-a", run_name="quick", tags={"dataset": "ptb"}) as t:
        t.log_config(config)
        t.log_params({"note": "z" * 7000})
        t.log_metrics({"loss": 4.0, "perplexity": 54.6, "skipped": None}, step=1)
        t.log_metrics({"loss": 3.5, "diverged": float("nan")}, step=2)
        t.log_artifact(extra, "vocab")
        t.log_artifacts(folder, "data")
        t.log_figure(fig, "plots/curve.png")
        t.log_text("hello", "notes/hello.txt")
        t.log_dict({"a": 1}, "summary.json")
        t.set_tags({"stage": "train"})
        run_id = t.run_id
        assert mlflow.active_run().info.run_id == run_id
    assert t.run_id == run_id  # kept after the run ends

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "quick"
    params = run.data.params
    assert params["training.optimizer.learning_rate"] == "0.25"
    assert params["model.cell"] == "lstm"
    assert params["name"] == "quick"
    assert len(params["note"]) == tracking.MAX_PARAM_VALUE_LENGTH
    assert run.data.tags["dataset"] == "ptb" and run.data.tags["stage"] == "train"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 4.0), (2, 3.5)]
    assert run.data.metrics["perplexity"] == pytest.approx(54.6)
    assert "skipped" not in run.data.metrics
    assert math.isnan(run.data.metrics["diverged"])

    files = {f.path for f in client.list_artifacts(run_id)}
    assert {"config.yaml", "vocab", "data", "plots", "notes", "summary.json"} <= files
    local = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert local.parent == tmp_path
    assert yaml.safe_load(local.read_text()) == config.model_dump(mode="json")
    assert [f.path for f in client.list_artifacts(run_id, "data")] == ["data/manifest.json"]
    assert [f.path for f in client.list_artifacts(run_id, "plots")] == ["plots/curve.png"]

    # artifacts live next to the database; nothing lands in ./mlruns
    exp = client.get_experiment_by_name("exp-a")
    assert exp.artifact_location == str(store_root / "mlflow_runs" / "artifacts" / "exp-a")
    assert (store_root / "mlflow_runs" / "artifacts" / "exp-a" / run_id / "artifacts" / "config.yaml").is_file()
    assert not (store_root / "mlruns").exists()

    # a resumed run keeps its params and adds to its metrics
    with tracking.Tracker(uri, "exp-a", run_id=run_id) as again:
        again.log_config(config)  # same values: no clash with the immutable params
        again.log_metrics({"loss": 3.0}, step=3)
    assert len(client.get_metric_history(run_id, "loss")) == 3
    assert client.get_run(run_id).info.status == "FINISHED"


def test_disabled_tracker_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    f = tmp_path / "a.txt"
    f.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    with tracking.Tracker(uri, "exp", run_name="worker-1", enabled=False) as t:
        assert t.run_id is None
        t.log_config({"a": {"b": 1}})
        t.log_params({"a": 1})
        t.log_metrics({"loss": 1.0}, step=1)
        t.log_artifact(f)
        t.log_artifacts(tmp_path)
        t.log_figure(Figure(), "x.png")
        t.log_text("t", "t.txt")
        t.log_dict({"a": 1}, "d.json")
        t.set_tags({"a": "b"})
        assert t.log_model(object(), "model") is None  # never touches the model
        assert t.register_model("models:/m-x", "name") is None
        assert mlflow.active_run() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "store").exists()


def test_logging_before_start_is_an_error(store):
    t = tracking.Tracker(store, "exp-unstarted")
    with pytest.raises(RuntimeError, match="not started"):
        t.log_metrics({"loss": 1.0}, step=1)


def test_exception_marks_the_run_failed(store, client):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.Tracker(store, "exp-fail") as t:
            t.log_metrics({"loss": 1.0}, step=1)
            raise RuntimeError("boom")
    assert client.get_run(t.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_metric_history_in_step_order_and_up_to_a_step(store, client):
    with tracking.Tracker(store, "exp-history") as t:
        for step, value in ((2, 0.4), (1, 0.5), (3, 0.3), (4, 0.35)):  # step 4: the final evaluation
            t.log_metrics({"val_wer": value}, step=step)
    assert tracking.metric_history(store, t.run_id, "val_wer") == [0.5, 0.4, 0.3, 0.35]
    assert tracking.metric_history(client, t.run_id, "val_wer", last_step=3) == [0.5, 0.4, 0.3]
    assert tracking.metric_history(store, t.run_id, "missing") == []


# ---------------------------------------------------------------------------------------------
# Keras models with a raw-string input


def test_string_model_logs_registers_and_loads_back(store, client, tmp_path):
    model = string_model()
    texts = np.asarray(TEXTS, dtype=object)
    expected = model.predict(texts, verbose=0)

    with tracking.Tracker(store, "exp-model", run_name="model") as t:
        uri = t.log_model(model, "model", input_example=TEXTS[:2])
        version = t.register_model(uri, "tiny-string")
        run_id = t.run_id
    assert uri.startswith("models:/")
    assert version == "1"

    mv = client.get_model_version("tiny-string", "1")
    assert mv.run_id == run_id
    info = mlflow.models.get_model_info(f"models:/tiny-string/{version}")
    assert info.flavors["keras"]["save_exported_model"] is False
    (spec,) = info.signature.inputs.inputs
    assert spec.type == np.dtype(object) and spec.shape == (-1,)
    assert info.signature.outputs.inputs[0].shape == (-1, 3)
    assert info.flavors["python_function"]["loader_module"] == "pipelines.tracking"
    assert "code" not in info.flavors["python_function"] and "code" not in info.flavors["keras"]
    local = mlflow.artifacts.download_artifacts(f"models:/tiny-string/{version}", dst_path=str(tmp_path / "dl"))
    assert not (Path(local) / "code").exists()
    assert (Path(local) / "data" / "model.keras").is_file()
    # the artifacts sit under the experiment's artifact location, next to the database
    db_dir = Path(store[len("sqlite:///") :]).parent
    assert client.get_experiment_by_name("exp-model").artifact_location == str(db_dir / "artifacts" / "exp-model")
    assert list((db_dir / "artifacts" / "exp-model" / "models").glob("m-*/artifacts/data/model.keras"))

    loaded = tracking.load_model(f"models:/tiny-string/{version}", store)
    assert isinstance(loaded, keras.Model)
    np.testing.assert_allclose(loaded.predict(texts, verbose=0), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded(tf.constant(TEXTS)).numpy(), expected, rtol=1e-6, atol=1e-6)

    served = mlflow.pyfunc.load_model(f"models:/tiny-string/{version}")
    np.testing.assert_allclose(served.predict(texts), expected, rtol=1e-6, atol=1e-6)

    # a second model version of the same name; the champion helper loads whatever holds the alias
    uri2 = tracking.Tracker(store, "exp-model").start()
    try:
        assert uri2.register_model(uri, "tiny-string") == "2"
    finally:
        uri2.end()
    decision = tracking.promote(store, "tiny-string", "1", "val_loss", 1.0, greater_is_better=False)
    assert decision.promoted
    resolved = tracking.resolve_model_uri("models:/tiny-string@champion", store)
    assert (resolved.version, resolved.run_id, resolved.uri) == ("1", run_id, "models:/tiny-string/1")
    np.testing.assert_allclose(
        tracking.load_model("models:/tiny-string@champion", store).predict(texts, verbose=0), expected,
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.slow
def test_string_model_loads_in_a_fresh_interpreter(store, client, tmp_path):
    """Needs the champion of test_string_model_logs_registers_and_loads_back (same module store)."""
    try:
        client.get_model_version_by_alias("tiny-string", "champion")
    except mlflow.exceptions.MlflowException:
        pytest.skip("runs after test_string_model_logs_registers_and_loads_back")
    expected = string_model().predict(np.asarray(TEXTS, dtype=object), verbose=0)
    # a fresh interpreter: rnnflow's classes are registered by rnnflow itself, not by the artifact
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from pipelines import tracking
        m = tracking.load_model("models:/tiny-string@champion", {store!r})
        print("PRED", np.asarray(m.predict(np.asarray({TEXTS!r}, dtype=object), verbose=0)).tolist())
        import mlflow
        served = mlflow.pyfunc.load_model("models:/tiny-string@champion")
        print("SERVED", np.asarray(served.predict(np.asarray({TEXTS!r}, dtype=object))).tolist())
        """
    )
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), here, env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line[:4] in ("PRED", "SERV")}
    np.testing.assert_allclose(np.array(yaml.safe_load(lines["PRED"])), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(yaml.safe_load(lines["SERVED"])), expected, rtol=1e-5, atol=1e-6)


def test_signature_from_symbolic_inputs_without_example():
    sig = tracking.infer_keras_signature(string_model())
    (spec,) = sig.inputs.inputs
    assert spec.type == np.dtype(object) and spec.shape == (-1,)
    assert sig.outputs.inputs[0].shape == (-1, 3)


# ---------------------------------------------------------------------------------------------
# promotion


def _new_version(client: MlflowClient, name: str, store: str, metrics: dict | None = None) -> tuple[str, str]:
    """A registered version backed by a run of its own (no model files: promotion does not read them)."""
    with tracking.Tracker(store, "exp-promotion") as t:
        if metrics:
            t.log_metrics(metrics, step=1)
        run_id = t.run_id
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    mv = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
    return str(mv.version), run_id


def _alias(client, name, alias):
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def test_promotion_champion_challenger_tie_nan(store, client):
    name = "ptb-lm"
    v1, run1 = _new_version(client, name, store)
    d1 = tracking.promote(client, name, v1, "val_perplexity", 120.0, greater_is_better=False)
    assert d1.promoted and d1.alias == "champion"
    assert d1.champion_version_before is None and d1.champion_value_before is None
    assert "first" in d1.reason
    assert _alias(client, name, "champion") == v1
    assert client.get_model_version(name, v1).tags["metric.val_perplexity"] == "120.0"

    # worse: challenger, champion stays
    v2, run2 = _new_version(client, name, store)
    d2 = tracking.promote(client, name, v2, "val_perplexity", 130.0, greater_is_better=False)
    assert not d2.promoted and d2.alias == "challenger"
    assert (d2.champion_version_before, d2.champion_value_before, d2.candidate_value) == (v1, 120.0, 130.0)
    assert _alias(client, name, "champion") == v1 and _alias(client, name, "challenger") == v2

    # better: takes champion
    v3, run3 = _new_version(client, name, store)
    d3 = tracking.promote(store, name, v3, "val_perplexity", 110.0, greater_is_better=False)
    assert d3.promoted and "beats" in d3.reason
    assert (d3.champion_version_before, d3.champion_value_before) == (v1, 120.0)
    assert _alias(client, name, "champion") == v3

    # the decision is on the candidate's run
    run = client.get_run(run3)
    assert run.data.tags["promotion.decision"] == "champion"
    assert run.data.tags["promotion.champion_version_before"] == v1
    assert run.data.tags["promotion.reason"] == d3.reason
    assert run.data.metrics["promotion.candidate_value"] == 110.0
    assert run.data.metrics["promotion.champion_value"] == 120.0
    assert client.get_run(run2).data.tags["promotion.decision"] == "challenger"

    # tie: no promotion
    v4, _ = _new_version(client, name, store)
    d4 = tracking.promote(client, name, v4, "val_perplexity", 110.0, greater_is_better=False)
    assert not d4.promoted and "tie" in d4.reason
    assert _alias(client, name, "champion") == v3 and _alias(client, name, "challenger") == v4

    # NaN and inf never promote, even against a worse champion
    for bad in (math.nan, math.inf, -math.inf):
        vb, runb = _new_version(client, name, store)
        db = tracking.promote(client, name, vb, "val_perplexity", bad, greater_is_better=False)
        assert not db.promoted and "not a finite" in db.reason
        assert _alias(client, name, "champion") == v3
        assert "promotion.candidate_value" not in client.get_run(runb).data.metrics

    # promoting the champion again changes nothing
    again = tracking.promote(client, name, v3, "val_perplexity", 110.0, greater_is_better=False)
    assert again.promoted and "already" in again.reason
    assert _alias(client, name, "champion") == v3


def test_promotion_greater_is_better_and_challenger_cleared(store, client):
    name = "tagger"
    v1, _ = _new_version(client, name, store)
    assert tracking.promote(client, name, v1, "accuracy", 0.80, greater_is_better=True).promoted
    v2, _ = _new_version(client, name, store)
    assert not tracking.promote(client, name, v2, "accuracy", 0.70, greater_is_better=True).promoted
    v3, _ = _new_version(client, name, store)
    assert not tracking.promote(client, name, v3, "accuracy", 0.75, greater_is_better=True).promoted
    assert _alias(client, name, "challenger") == v3
    d = tracking.promote(client, name, v3, "accuracy", 0.90, greater_is_better=True)  # re-evaluated
    assert d.promoted and _alias(client, name, "champion") == v3
    assert _alias(client, name, "challenger") is None  # the new champion is no longer challenger


def test_champion_figure_falls_back_to_its_run_metrics(store, client):
    name = "char-lm"
    v1, _ = _new_version(client, name, store, metrics={"val_bpc": 1.5})
    client.set_registered_model_alias(name, "champion", v1)  # set by hand: no metric tag
    assert tracking.version_metric(client, name, v1, "val_bpc") == 1.5
    v2, _ = _new_version(client, name, store)
    d = tracking.promote(client, name, v2, "val_bpc", 1.6, greater_is_better=False)
    assert not d.promoted and d.champion_value_before == 1.5
    v3, _ = _new_version(client, name, store)
    d = tracking.promote(client, name, v3, "val_bpc", 1.4, greater_is_better=False, log_to_run=False)
    assert d.promoted and _alias(client, name, "champion") == v3


def test_resolve_model_uri_forms(store, client):
    name = "resolver"
    v1, run1 = _new_version(client, name, store)
    v2, run2 = _new_version(client, name, store)
    client.set_registered_model_alias(name, "champion", v1)
    assert tracking.resolve_model_uri(f"models:/{name}@champion", store).uri == f"models:/{name}/{v1}"
    latest = tracking.resolve_model_uri(f"models:/{name}/latest", store)
    assert (latest.version, latest.run_id) == (v2, run2)
    assert tracking.resolve_model_uri(f"runs:/{run1}/model", store).run_id == run1
    with pytest.raises(LookupError, match="no alias"):
        tracking.resolve_model_uri(f"models:/{name}@nobody", store)
