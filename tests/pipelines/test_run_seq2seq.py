"""End to end: the noisy-reversal encoder-decoder through `rnnflow run`, then `translate` and `evaluate`."""

import json
import os

import pytest

from pipelines import cli

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "reverse_tiny.yaml")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def _overrides(tmp_path):
    return ["--set", f"work_dir={tmp_path / 'work'}", "--set", f"data.output_dir={tmp_path / 'data'}",
            "--set", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]


def test_noisy_reversal_learns_registers_translates_and_evaluates(workspace, capsys):
    assert cli.main(["run", CONFIG, *_overrides(workspace)]) == 0
    out = capsys.readouterr().out
    metrics = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in out.splitlines()
               if line.startswith("  ") and line.strip().split(":")[0].startswith(("val_", "test_"))}
    # a short CPU run learns the task to near-perfect accuracy (greedy and beam 3)
    assert metrics["val_wer"] < 0.05 and metrics["test_wer"] < 0.05
    assert metrics["val_beam3_wer"] < 0.05
    assert metrics["val_per"] <= metrics["val_wer"]
    assert "registered version 1" in out

    model = "models:/reverse-tiny@champion"
    assert cli.main(["translate", "--model", model, "abxcd", "fedy"]) == 0
    assert capsys.readouterr().out.split() == ["dcba", "def"]
    assert cli.main(["translate", "--model", model, "--beam-size", "3", "--nbest", "3", "--format", "json",
                     "ceyfa"]) == 0
    result = json.loads(capsys.readouterr().out)
    scores = [o["score"] for o in result["outputs"]]
    assert result["outputs"][0]["output"] == "afec" and scores == sorted(scores, reverse=True)
    assert cli.main(["translate", "--model", model, "--nbest", "4", "--beam-size", "2", "abc"]) == 1

    assert cli.main(["evaluate", CONFIG, *_overrides(workspace), "--model", model, "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["wer"] == pytest.approx(metrics["test_beam3_wer"], abs=1e-4)  # the summary prints 4 decimals
    assert scores["chrf"] > 90
    assert cli.main(["tag", "--model", model, "abc"]) == 1  # not a tagger

    # Another beam size: the trained weights are scored, exported and registered again, not retrained
    # and not ignored (the exported model searches with the new beam size by default).
    assert cli.main(["run", CONFIG, *_overrides(workspace), "--set", "decode.beam_size=2"]) == 0
    out = capsys.readouterr().out
    again = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in out.splitlines()
             if line.startswith("  ") and line.strip().split(":")[0].startswith(("val_", "test_"))}
    assert "test_beam2_wer" in again and "test_beam3_wer" not in again
    assert again["val_wer"] == pytest.approx(metrics["val_wer"], abs=1e-9)  # the same weights, greedy
    assert "registered version 2" in out and "reused" not in out
    from pipelines import tracking

    exported = tracking.load_model("models:/reverse-tiny/2", f"sqlite:///{workspace}/mlflow.db")
    assert exported.beam_size == 2
