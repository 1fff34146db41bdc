"""Every test item counts: valid/test items whose tag or label the training split lacks go through
prepare → train → evaluate → `rnnflow evaluate` and are scored as wrong, counted and named."""

import json
import logging

import pytest

from pipelines import cli
from pipelines.config import parse_config
from pipelines.run import EXIT_OK, execute
from preprocessing.input_fns import load_examples
from preprocessing.manifest import load_manifest

TINY = {"embedding_dim": 8, "hidden_dim": 8, "num_layers": 1}
TRAINING = {"epochs": 1, "batch_size": 4, "eval_batch_size": 16, "jit_compile": False, "max_steps_per_epoch": 3}


def _columns(path):
    """Sentences 0..19 interleaved (8, 18 valid; 9, 19 test); test sentence 9 has the tag X and
    valid sentence 18 the tags X and Y, which no training sentence has."""
    blocks = []
    for i in range(20):
        rows = [("the", "DET"), (f"w{i % 5}", "NOUN"), ("runs", "VERB")]
        if i == 9:
            rows.append(("zzz", "X"))
        if i == 18:
            rows += [("qqq", "X"), ("yyy", "Y")]
        blocks.append("\n".join(f"{w} {t}" for w, t in rows))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def _run(tmp_path, data, model=None):
    config = parse_config({
        "name": "unseen", "work_dir": str(tmp_path / "runs"),
        "data": {**data, "output_dir": str(tmp_path / "data"),
                 "split": {"method": "interleave", "period": 10, "valid": 0.1, "test": 0.1}},
        "model": {**TINY, **(model or {})}, "training": TRAINING,
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    })
    return config, execute(config, register=False)


@pytest.mark.parametrize("use_crf", [False, True])
def test_tagging_keeps_sentences_with_unseen_tags_and_scores_them_as_wrong(tmp_path, use_crf, caplog, capsys):
    path = tmp_path / "tagged.txt"
    _columns(path)
    caplog.set_level(logging.WARNING)
    config, result = _run(tmp_path, {"dataset": "columns", "files": [str(path)]}, {"use_crf": use_crf})

    manifest = load_manifest(result.data_dir)
    assert manifest["splits"]["test"]["examples"] == 2 and manifest["splits"]["valid"]["examples"] == 2
    assert manifest["splits"]["test"]["unseen"] == {"examples": 1, "labels": {"X": 1}}
    assert manifest["splits"]["valid"]["unseen"] == {"examples": 1, "labels": {"X": 1, "Y": 1}}
    assert manifest["rejected"]["count"] == 0
    assert any("unseen in training" in r.getMessage() for r in caplog.records)

    test = load_examples(result.data_dir, "test")
    m = result.metrics
    assert m["test_tokens"] == sum(len(x) for x in test.ids) == 7  # every token of both sentences
    assert m["test_unseen"] == 1 and m["val_unseen"] == 2
    assert m["val_tokens"] == 8
    assert m["test_accuracy"] <= (7 - 1) / 7 and m["val_accuracy"] <= (8 - 2) / 8  # unseen ones are wrong
    assert m["test_loss"] == m["test_loss"] and m["test_loss"] > 0  # finite: unseen tokens left out of the loss

    # evaluation.json names them, and the confusion matrix has their gold rows
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=config.resolved_tracking_uri())
    local = download_artifacts(run_id=result.mlflow_run_id, artifact_path="evaluation.json",
                               tracking_uri=config.resolved_tracking_uri(), dst_path=str(tmp_path / "dl"))
    report = json.loads(open(local, encoding="utf-8").read())
    assert report["test"]["unseen"] == {"X": 1, "Y": 0} and report["valid"]["unseen"] == {"X": 1, "Y": 1}
    names = report["test_confusion"]["labels"]
    assert names[-2:] == ["X", "Y"]
    matrix = report["test_confusion"]["matrix"]
    assert sum(matrix[names.index("X")]) == 1 and all(row[names.index("X")] == 0 for row in matrix)
    assert client.get_run(result.mlflow_run_id).data.metrics["test_unseen"] == 1

    # `rnnflow evaluate` scores the exported model on the same split the same way
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["evaluate", str(config_path), "--model", result.model_path, "--split", "test"]) == EXIT_OK
    out = capsys.readouterr().out
    scores = json.loads(out[out.index("{"):])
    assert scores["unseen"] == 1 and scores["accuracy"] == pytest.approx(m["test_accuracy"], abs=1e-12)


def test_classification_keeps_documents_with_unseen_labels(tmp_path):
    path = tmp_path / "docs.tsv"
    lines = [f"{'rare' if i == 9 else ('ham', 'spam')[i % 2]}\tmessage {i} text" for i in range(20)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, result = _run(tmp_path, {"dataset": "tsv", "files": [str(path)], "dedupe": False})
    manifest = load_manifest(result.data_dir)
    assert manifest["splits"]["test"]["unseen"] == {"examples": 1, "labels": {"rare": 1}}
    m = result.metrics
    assert m["test_examples"] == 2 and m["test_unseen"] == 1 and m["test_accuracy"] <= 0.5
    assert "val_unseen" in m and m["val_unseen"] == 0
