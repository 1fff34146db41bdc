"""`rnnflow run` against a real `mlflow server` (sqlite store, proxied artifacts) started by the test:
params, metrics, artifacts and the registry read back through the server, the artifacts stored by
the server (nothing written beside the client), and `models:/NAME@champion` loaded in a fresh
process through the server and scored like the in-process model."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from mlflow import MlflowClient

from pipelines import cli, tracking
from pipelines.config import parse_config
from pipelines.run import EXIT_OK
from services import http_status, mlflow_server, service_env
from test_run import _config, workspace  # noqa: F401 - workspace is a fixture

NAME = "tiny-lm"
SENTENCE = "the cat sat on the log"

# A fresh interpreter: nothing of the test's MLflow state, the store only through MLFLOW_TRACKING_URI.
SCORE = textwrap.dedent("""
    import json, sys
    import mlflow, numpy as np, tensorflow as tf
    from pipelines import tracking

    uri, sentence = sys.argv[1], sys.argv[2]
    keras_model = tracking.load_model(uri)
    direct = {k: np.asarray(v).tolist() for k, v in keras_model(tf.constant([sentence])).items()}
    served = mlflow.pyfunc.load_model(uri).predict(np.asarray([sentence], dtype=object))
    print("SCORES " + json.dumps({"direct": direct, "pyfunc": {k: np.asarray(v).tolist() for k, v in served.items()},
                                  "tracking_uri": mlflow.get_tracking_uri()}))
""")


def _server_config(workspace, uri):
    raw = _config(workspace, epochs=1).model_dump(mode="json")
    raw["tracking"] = {**raw["tracking"], "tracking_uri": uri}
    config = parse_config(raw)
    path = workspace / "tiny.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return config, str(path)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.timeout(420)
def test_run_against_a_tracking_server_then_load_the_champion_elsewhere(workspace, tmp_path_factory, capsys):
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root) as server:
        config, path = _server_config(workspace, server.uri)
        assert config.resolved_tracking_uri() == server.uri
        capsys.readouterr()
        assert cli.main(["run", path]) == EXIT_OK
        out = capsys.readouterr().out
        assert f"registered version 1 of {NAME}" in out

        client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
        experiment = client.get_experiment_by_name("tests")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server decides: proxied
        (run,) = client.search_runs([experiment.experiment_id])
        run_id = run.info.run_id
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")

        # params: the resolved config and the data's fingerprint
        data_dir = next((workspace / "data").rglob("manifest.json")).parent
        manifest = json.loads((data_dir / "manifest.json").read_text())
        params = run.data.params
        assert params["model.cell"] == "gru" and params["model.hidden_dim"] == "8"
        assert params["training.batch_size"] == "4" and params["training.epochs"] == "1"
        assert params["training.optimizer.learning_rate"] == "0.02"
        assert params["data.fingerprint"] == manifest["fingerprint"]

        # metrics: the final evaluation, and histories per epoch and per step
        metrics = run.data.metrics
        assert math.isfinite(metrics["test_perplexity"]) and 1 < metrics["test_perplexity"] < 20
        assert metrics["epochs_completed"] == 1
        val = client.get_metric_history(run_id, "val_perplexity")
        assert len(val) == 2 and val[-1].value == pytest.approx(metrics["val_perplexity"])  # epoch 1 + final
        steps = client.get_metric_history(run_id, "step/train_loss")
        assert len(steps) >= 3 and len({m.step for m in steps}) == len(steps)

        # artifacts, listed and read back through the server
        top = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.yaml", "data", "plots", "samples", "history.json"} <= top, top
        plots = {a.path: a.file_size for a in client.list_artifacts(run_id, "plots")}
        assert {"plots/learning_curves.png", "plots/gradient_norms.png"} <= set(plots), plots
        assert all(size > 1000 for size in plots.values())
        data = {a.path for a in client.list_artifacts(run_id, "data")}
        assert "data/manifest.json" in data
        vocab_name = manifest["vocab"]["path"].rsplit("/", 1)[-1]
        assert {a.path for a in client.list_artifacts(run_id, "data/vocab")} == {f"data/vocab/{vocab_name}"}
        downloads = tmp_path_factory.mktemp("downloads")
        logged_config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", str(downloads))).read_text())
        assert logged_config["tracking"]["tracking_uri"] == server.uri and logged_config["model"]["cell"] == "gru"
        logged_manifest = json.loads(Path(client.download_artifacts(run_id, "data/manifest.json", str(downloads))).read_text())
        assert logged_manifest["fingerprint"] == manifest["fingerprint"]
        logged_vocab = Path(client.download_artifacts(run_id, f"data/vocab/{vocab_name}", str(downloads))).read_text()
        assert logged_vocab == (data_dir / manifest["vocab"]["path"]).read_text()

        # the model: a logged model of the run, its files listed through the server
        version = client.get_model_version(NAME, "1")
        assert version.run_id == run_id
        (logged,) = client.search_logged_models([experiment.experiment_id])
        assert logged.source_run_id == run_id and logged.name == "model"
        model_id = logged.model_id
        assert model_id in version.source, version.source
        model_files = {a.path for a in client.list_logged_model_artifacts(model_id)}
        assert {"MLmodel", "data"} <= model_files, model_files

        # stored by the server under root/artifacts, nothing beside the client (no ./mlruns, ./mlartifacts)
        stored = _files(server.artifacts)
        prefix = f"{experiment.experiment_id}/{run_id}/artifacts/"
        for name in ("config.yaml", "data/manifest.json", "plots/learning_curves.png", "history.json"):
            assert prefix + name in stored, (name, stored[:20])
        assert any(f.endswith(f"{model_id}/artifacts/MLmodel") for f in stored), stored
        assert any(f.endswith(f"{model_id}/artifacts/data/model.keras") for f in stored), stored
        assert prefix + f"data/vocab/{vocab_name}" in stored
        for local in ("mlruns", "mlartifacts", "mlflow_runs"):
            assert not (workspace / local).exists(), local
        assert not (workspace / "mlflow.db").exists()

        # registration: one version, champion, with the promotion recorded on the version and the run
        assert [int(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == [1]
        champion = client.get_model_version_by_alias(NAME, "champion")
        assert str(champion.version) == "1" and champion.run_id == run_id
        assert champion.tags["promotion.decision"] == "champion"
        assert float(champion.tags["metric.val_perplexity"]) == pytest.approx(metrics["val_perplexity"])
        run_tags = client.get_run(run_id).data.tags
        assert run_tags["promotion.decision"] == "champion" and run_tags["promotion.promoted"] == "true"
        assert run_tags["promotion.model_name"] == NAME and run_tags["promotion.version"] == "1"

        # in this process: the champion, fetched through the server
        model = tracking.load_model(f"models:/{NAME}@champion", server.uri)
        here = {k: np.asarray(v) for k, v in model(tf.constant([SENTENCE])).items()}
        assert set(here) == {"log_prob", "num_tokens", "perplexity"}
        assert here["num_tokens"][0] == len(SENTENCE.split()) + 1  # the words and </s>

        # a fresh process that knows the store only through MLFLOW_TRACKING_URI
        elsewhere = tmp_path_factory.mktemp("elsewhere")
        done = subprocess.run([sys.executable, "-c", SCORE, f"models:/{NAME}@champion", SENTENCE], cwd=elsewhere,
                              env={**service_env(), "MLFLOW_TRACKING_URI": server.uri}, capture_output=True,
                              text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        line = next(x for x in done.stdout.splitlines() if x.startswith("SCORES "))
        scores = json.loads(line[len("SCORES "):])
        assert scores["tracking_uri"] == server.uri
        for loader in ("direct", "pyfunc"):
            assert set(scores[loader]) == set(here), loader
            for key, value in here.items():
                np.testing.assert_allclose(scores[loader][key], value, rtol=1e-5, err_msg=f"{loader} {key}")
        assert _files(elsewhere) == []  # downloaded to temporary folders, nothing left behind

        # the same config again: reused, and not registered a second time
        assert cli.main(["run", path]) == EXIT_OK
        out = capsys.readouterr().out
        assert "reused" in out and f"registered earlier from this run: version 1 of {NAME}" in out
        assert [int(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == [1]
        assert len(client.search_runs([experiment.experiment_id])) == 1

        # the server stops and starts again on the same port and store: everything is still there
        server.stop()
        assert not server.service.running()
        with pytest.raises(OSError):
            http_status(f"{server.uri}/health", timeout=2)
        server.start()
        assert server.uri == f"http://127.0.0.1:{server.port}"
        assert client.get_run(run_id).data.params["data.fingerprint"] == manifest["fingerprint"]
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
        assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}
