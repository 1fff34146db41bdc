"""`rnnflow run` end to end on a tiny corpus: registry, promotion, re-runs, the lock, config errors, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines import cli
from pipelines.config import ConfigError, load_config, parse_config
from pipelines.run import EXIT_LOCKED, execute
from pipelines.run_state import RunLock, RunLockedError

LINES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the mat was on the log"]


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(LINES * 30) + "\n", encoding="utf-8")
    return tmp_path


def _config(tmp_path, name="tiny", **training):
    raw = {
        "name": name,
        "work_dir": str(tmp_path / "runs" / name),
        "data": {"dataset": "text", "files": [str(tmp_path / "corpus.txt")], "output_dir": str(tmp_path / "data"),
                 "split": {"valid": 0.15, "test": 0.15}},
        "model": {"cell": "gru", "num_layers": 1, "embedding_dim": 8, "hidden_dim": 8},
        "training": {"batch_size": 4, "bptt": 5, "epochs": 2, "eval_batch_size": 2, "jit_compile": False,
                     "optimizer": {"name": "adam", "learning_rate": 0.02}, "log_every_steps": 5, **training},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "tests",
                     "registered_model": "tiny-lm"},
        "generate": {"prompt": "the cat", "max_tokens": 5, "temperature": 0},
    }
    return parse_config(raw)


def test_run_registers_promotes_and_reruns_safely(workspace, capsys):
    config = _config(workspace)
    first = execute(config)
    client = MlflowClient(config.resolved_tracking_uri())
    assert first.registered_version == "1" and first.promotion["promoted"]
    assert str(client.get_model_version_by_alias("tiny-lm", "champion").version) == "1"
    assert first.metrics["test_perplexity"] < 11  # well below the vocabulary size: it learned something
    assert Path(first.model_path).is_file() and first.sample.startswith("the cat")

    run = client.get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.cell"] == "gru"
    assert "val_perplexity" in run.data.metrics and "step/grad_norm" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(first.mlflow_run_id)}
    assert {"plots", "data", "samples", "config.yaml"} <= artifacts
    plots = {a.path for a in client.list_artifacts(first.mlflow_run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/gradient_flow.png", "plots/gradient_norms.png"} <= plots

    # The CLI's evaluate and generate agree with the run, from the exported model file.
    cfg_path = workspace / "tiny.yaml"
    cfg_path.write_text(json.dumps(config.model_dump(mode="json")))
    capsys.readouterr()
    assert cli.main(["evaluate", str(cfg_path), "--model", first.model_path, "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["perplexity"] == pytest.approx(first.metrics["test_perplexity"], rel=1e-4)
    assert cli.main(["generate", "--model", first.model_path, "--prompt", "the cat", "--max-tokens", "5",
                     "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip() == first.sample

    # Same config and data again: nothing is retrained or registered.
    again = execute(config)
    assert again.reused and again.mlflow_run_id == first.mlflow_run_id
    assert len(client.search_model_versions("name='tiny-lm'")) == 1

    # A much weaker model (one step of training) becomes the challenger; the champion stays.
    worse = execute(_config(workspace, epochs=1, max_steps_per_epoch=1))
    assert worse.registered_version == "2" and not worse.promotion["promoted"]
    assert str(client.get_model_version_by_alias("tiny-lm", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("tiny-lm", "challenger").version) == "2"


def test_a_held_lock_refuses_a_second_run(workspace):
    config = _config(workspace)
    with RunLock(config.resolved_work_dir):
        with pytest.raises(RunLockedError, match="another run"):
            execute(config)
    assert not (workspace / "mlflow.db").exists()  # refused before anything was written


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntraining:\n  lerning_rate: 1\n  epochs: zero\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "bad.yaml" in message and "training.lerning_rate: unknown key" in message
    assert "training.epochs" in message
    with pytest.raises(ConfigError, match="tie_weights needs"):
        parse_config({"name": "x", "model": {"tie_weights": True, "embedding_dim": 3, "hidden_dim": 4}})
    with pytest.raises(ConfigError, match="data.files"):
        parse_config({"name": "x", "data": {"dataset": "text"}})
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    config = load_config(Path("configs/ptb_small.yaml").resolve(), ["training.epochs=2", "model.cell=gru"])
    assert config.training.epochs == 2 and config.model.cell == "gru"


def test_every_shipped_config_is_valid():
    for path in sorted(Path("configs").glob("*.yaml")):
        config = load_config(path)
        assert config.name == path.stem


def test_cli_help_and_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("prepare", "train", "evaluate", "generate", "run"):
        assert command in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {cell: transformer}\n")
    assert cli.main(["run", str(bad)]) == 2
    assert "model.cell" in capsys.readouterr().err


def test_cli_reports_a_locked_work_dir(workspace, capsys):
    config = _config(workspace)
    cfg_path = workspace / "tiny.yaml"
    cfg_path.write_text(json.dumps(config.model_dump(mode="json")))
    with RunLock(config.resolved_work_dir):
        assert cli.main(["run", str(cfg_path)]) == EXIT_LOCKED
    assert "locked" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_run_then_generate_from_the_registry(workspace):
    config = _config(workspace)
    cfg_path = workspace / "tiny.yaml"
    cfg_path.write_text(json.dumps(config.model_dump(mode="json")))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    exe = [sys.executable, "-m", "pipelines.cli"]
    repo = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(repo)
    done = subprocess.run(exe + ["run", str(cfg_path)], cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test_perplexity" in done.stdout
    gen = subprocess.run(exe + ["generate", "--model", "models:/tiny-lm@champion", "--prompt", "the dog",
                                "--max-tokens", "4", "--temperature", "0", "--tracking-uri", config.resolved_tracking_uri()],
                         cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.strip().startswith("the dog") and len(gen.stdout.split()) >= 3


# ------------------------------------------------------------------ reuse: what is hashed, what is re-applied
def _versions(client, name):
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))


def test_train_then_run_registers_the_reused_training_once(workspace, capsys):
    config = _config(workspace)
    trained = execute(config, register=False)
    client = MlflowClient(config.resolved_tracking_uri())
    assert trained.registered_version is None and _versions(client, "tiny-lm") == []

    ran = execute(config)  # reuses the training, but must still register it
    assert ran.reused and ran.mlflow_run_id == trained.mlflow_run_id
    assert ran.registered_version == "1" and ran.promotion["promoted"] and not ran.registered_before
    assert client.get_model_version("tiny-lm", "1").run_id == trained.mlflow_run_id
    assert str(client.get_model_version_by_alias("tiny-lm", "champion").version) == "1"

    again = execute(config)  # idempotent: nothing new
    assert again.reused and again.registered_version == "1" and again.registered_before
    assert _versions(client, "tiny-lm") == [1]
    capsys.readouterr()
    assert cli.main(["run", _write(workspace, config)]) == 0
    assert "registered earlier from this run: version 1 of tiny-lm" in capsys.readouterr().out
    assert _versions(client, "tiny-lm") == [1]

    # another registered model name: registered there (version 1 of it), not reported from the old name
    other = config.model_copy(update={"tracking": config.tracking.model_copy(update={"registered_model": "other-lm"})})
    moved = execute(other)
    assert moved.reused and moved.registered_version == "1" and not moved.registered_before
    assert moved.promotion["model_name"] == "other-lm"
    assert client.get_model_version("other-lm", "1").run_id == trained.mlflow_run_id
    assert _versions(client, "tiny-lm") == [1] and _versions(client, "other-lm") == [1]
    execute(other)
    assert _versions(client, "other-lm") == [1]


def _write(workspace, config) -> str:
    path = workspace / f"{config.name}.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return str(path)


def test_changed_generation_settings_resample_the_trained_weights(workspace):
    from pipelines.run import output_key

    config = _config(workspace)
    first = execute(config)
    changed = parse_config({**config.model_dump(mode="json"),
                            "generate": {"prompt": "a dog", "max_tokens": 4, "temperature": 0}})
    assert output_key(changed) != output_key(config)
    second = execute(changed)
    # not retrained: the same training key, the same weights (identical perplexities), a new sample
    assert second.run_key == first.run_key and second.output_key != first.output_key
    assert second.resumed_from_step is not None
    assert second.metrics["test_perplexity"] == first.metrics["test_perplexity"]
    assert second.metrics["val_perplexity"] == first.metrics["val_perplexity"]
    assert second.sample.startswith("a dog") and not second.reused
    assert Path(second.model_path).is_file() and second.model_path != first.model_path
    # a new MLflow run, linked to the training's, with the training history in it; registered from it
    client = MlflowClient(config.resolved_tracking_uri())
    run = client.get_run(second.mlflow_run_id)
    assert second.mlflow_run_id != first.mlflow_run_id
    assert run.data.tags["rnnflow.trained_by_run"] == first.mlflow_run_id
    assert run.data.params["generate.prompt"] == "a dog"
    history = [m.value for m in client.get_metric_history(second.mlflow_run_id, "val_perplexity")]
    original = [m.value for m in client.get_metric_history(first.mlflow_run_id, "val_perplexity")]
    assert sorted(history) == sorted(original) and len(history) == 3  # 2 epochs + the final evaluation
    assert client.get_metric_history(second.mlflow_run_id, "step/train_loss")
    assert second.registered_version == "2" and client.get_model_version("tiny-lm", "2").run_id == run.info.run_id
    # back to the first settings: its outputs are reused as they were
    back = execute(config)
    assert back.reused and back.mlflow_run_id == first.mlflow_run_id and back.sample == first.sample
    assert _versions(client, "tiny-lm") == [1, 2]


def test_what_the_keys_hash():
    from pipelines.run import output_key, run_key

    base = _config(Path("/tmp/keys"))
    dump = base.model_dump(mode="json")

    def with_(section, **values):
        return parse_config({**dump, section: {**dump[section], **values}})

    fp = "f" * 64
    assert run_key(base, fp) != run_key(base, "e" * 64)  # the data
    assert run_key(with_("training", epochs=3), fp) != run_key(base, fp)
    assert run_key(with_("model", hidden_dim=16), fp) != run_key(base, fp)
    assert run_key(with_("tracking", metric="val_loss"), fp) != run_key(base, fp)  # picks the best epoch
    for section, values in (("generate", {"prompt": "x"}), ("decode", {"beam_size": 2}),
                            ("tracking", {"registered_model": "x", "experiment": "y"})):
        changed = with_(section, **values)
        assert run_key(changed, fp) == run_key(base, fp), section
    assert output_key(with_("generate", top_k=3)) != output_key(base)
    assert output_key(with_("decode", length_penalty=0.5)) != output_key(base)
    assert output_key(with_("tracking", registered_model="x")) == output_key(base)
