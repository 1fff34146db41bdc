"""A new task defined entirely in this module, registered through the public registry, run through
prepare → train → evaluate → export → register with no edit to prepare.py, run.py, cli.py or config.py.

The toy task tags every token of plain text with its length bucket (``short`` ≤ 3 characters,
``medium`` ≤ 6, ``long``): it reads only text (the ``lines`` format), makes its own tags in its Beam
encode step, and reuses the tagger model, evaluator and export of the tagging task.
"""

import json
import random

import apache_beam as beam
import pytest
from mlflow import MlflowClient

from pipelines import cli, tasks
from pipelines.config import parse_config
from pipelines.run import EXIT_OK, execute
from preprocessing.input_fns import load_examples
from preprocessing.manifest import load_manifest
from preprocessing.vocab import LabelSet

BUCKETS = ("long", "medium", "short")  # LabelSet order (sorted)


def bucket(token: str) -> str:
    return "short" if len(token) <= 3 else "medium" if len(token) <= 6 else "long"


def _with_length_tags(record):
    return {**record, "tags": [bucket(t) for t in record["tokens"]]}


class LengthTags(tasks.TaggingTask):
    """Tags each token with its length bucket; needs nothing from the reader but text."""

    name = "length_tags"
    reads = frozenset({tasks.TEXT})
    metric, greater_is_better = "val_accuracy", True

    def encode(self, data, tokenized, vocab, out_dir):
        tagged = tokenized | "AddLengthTags" >> beam.Map(_with_length_tags)
        return super().encode(data, tagged, vocab, out_dir)


@pytest.fixture()
def length_tags():
    task = tasks.register(LengthTags())
    yield task
    tasks.unregister(task.name)


def _corpus(path, lines=300, seed=0):
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(n)) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9) for _ in range(6)]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(lines)) + "\n",
                    encoding="utf-8")


def _config(tmp_path):
    corpus = tmp_path / "corpus.txt"
    _corpus(corpus)
    return parse_config({
        "name": "length-tags",
        "work_dir": str(tmp_path / "runs"),
        "data": {"dataset": "text", "files": [str(corpus)], "task": "length_tags", "output_dir": str(tmp_path / "data"),
                 "split": {"valid": 0.1, "test": 0.1}},
        "model": {"embedding_dim": 16, "hidden_dim": 16, "num_layers": 1},
        "training": {"epochs": 2, "batch_size": 16, "eval_batch_size": 32, "jit_compile": False,
                     "optimizer": {"name": "adam", "learning_rate": 0.02}, "log_every_steps": 5},
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "registered_model": "length-tags"},
    })


def test_the_registry_refuses_a_second_task_of_the_same_name(length_tags):
    with pytest.raises(ValueError, match="registered already"):
        tasks.register(LengthTags())
    assert tasks.get("length_tags") is length_tags and "length_tags" in tasks.names()


def test_an_unregistered_task_is_a_config_error_naming_the_choices():
    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match="data.task.*length_tags"):
        parse_config({"name": "x", "data": {"dataset": "text", "files": ["x.txt"], "task": "length_tags"}})


def test_a_toy_task_runs_prepare_train_evaluate_export_register(length_tags, tmp_path, capsys):
    config = _config(tmp_path)
    assert config.data.task == "length_tags" and config.model.type == "tagger"  # defaults from the task
    assert config.tracking.metric == "val_accuracy"

    result = execute(config)

    # prepare: the task's encode step wrote its tags, its label set and its feature spec
    manifest = load_manifest(result.data_dir)
    assert manifest.task == "length_tags"
    assert manifest["features"] == {"ids": "sequence", "tags": "sequence"}
    assert LabelSet.load(manifest.file("labels")).labels == list(BUCKETS)
    test = load_examples(result.data_dir, "test")
    assert len(test) == manifest["splits"]["test"]["examples"] > 0
    # train + evaluate: every test token is scored; the task is easy, so two short epochs learn it
    assert result.metrics["test_tokens"] == sum(len(x) for x in test.ids)
    assert result.metrics["val_accuracy"] > 0.6, result.metrics
    assert result.metrics["epochs_completed"] == 2

    # export: raw strings in, the task's tags out
    assert result.model_path.endswith("tagger.keras")
    assert result.sample and all(pair.rsplit("/", 1)[1] in BUCKETS for pair in result.sample.split())

    # register: version 1 of the registered model, champion (nothing to beat)
    assert result.registered_version == "1"
    client = MlflowClient(tracking_uri=config.resolved_tracking_uri(), registry_uri=config.resolved_tracking_uri())
    assert str(client.get_model_version_by_alias("length-tags", "champion").version) == "1"
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["data.num_labels"] == "3"

    # the CLI: the tagging verb serves the model from the registry, and `evaluate` scores it with the toy task
    capsys.readouterr()
    uri = config.resolved_tracking_uri()
    assert cli.main(["tag", "--model", "models:/length-tags@champion", "--tracking-uri", uri, "--format", "json",
                     "abcdefghi a abcd"]) == EXIT_OK
    tagged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tagged["tokens"] == ["abcdefghi", "a", "abcd"] and set(tagged["tags"]) <= set(BUCKETS)

    config_path = tmp_path / "config.json"  # a YAML file (JSON is YAML) with the same settings
    config_path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    assert cli.main(["evaluate", str(config_path), "--model", result.model_path, "--split", "test"]) == EXIT_OK
    out = capsys.readouterr().out
    scores = json.loads(out[out.index("{"):])
    assert scores["split"] == "test" and scores["accuracy"] == pytest.approx(result.metrics["test_accuracy"], abs=1e-9)
