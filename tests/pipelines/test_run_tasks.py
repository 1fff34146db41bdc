"""`rnnflow run` end to end for tagging and classification: the shipped twt_pos, twt_pos_crf and
bbc_topics configs shrunk to a few training steps on the real corpora, and a CoNLL-2003-style BIO
columns file; then re-running, `rnnflow tag` / `classify` from the registry and from the run's model
file, and `rnnflow evaluate` against the run's own test score.

Everything lives under ``tmp_path``: the work directory, the prepared data and a sqlite MLflow store.
"""

import json
import math
import random
import shutil
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from pipelines import cli
from pipelines.config import load_config
from pipelines.run import EXIT_FAILED, EXIT_OK, execute
from preprocessing.vocab import LabelSet
from requires import needs_bbc, needs_twt

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

# A few steps of a tiny model: enough to exercise every stage, not to learn much.
TINY = [
    "model.embedding_dim=8", "model.hidden_dim=8", "model.num_layers=1",
    "training.epochs=2", "training.max_steps_per_epoch=3", "training.batch_size=8",
    "training.eval_batch_size=64", "training.jit_compile=false", "training.log_every_steps=1",
]
SMALL_DATA = ["data.max_lines={train: 200, valid: 40, test: 40}"]
SMALL_CHARS = ["model.char_embedding_dim=4", "model.char_hidden_dim=4"]
# BBC: max_lines keeps the first records of each split in corpus order, and the corpus is ordered by
# topic folder, so {train: 200, valid: 40, test: 40} keeps only "business" articles (a one-class
# classifier). The whole corpus (2,225 articles) prepares in a few seconds; training is still 3 steps.
BBC_DATA = ["data.max_lines=null"]




@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return tmp_path


def _shipped_config(tmp_path, name: str) -> Path:
    """A copy of ``configs/<name>.yaml``: every step of a test reads the same config, even if the
    shipped file is edited while the test runs."""
    path = tmp_path / f"{name}.yaml"
    shutil.copyfile(CONFIGS / f"{name}.yaml", path)
    return path


def _tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def _overrides(tmp_path, *extra) -> list[str]:
    return [f"work_dir={tmp_path}/runs", f"data.output_dir={tmp_path}/data",
            f"tracking.tracking_uri={_tracking_uri(tmp_path)}", *TINY, *[x for group in extra for x in group]]


def _sets(overrides) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _finished_run(tmp_path) -> dict:
    """The result of the one finished run (``state.json`` of its training-key folder, one output)."""
    states = sorted((tmp_path / "runs").glob("*/state.json"))
    assert len(states) == 1, states
    state = json.loads(states[0].read_text())
    assert state["status"] == "done"
    (output,) = state["outputs"].values()
    assert output["status"] == "done"
    return output["result"]


def _run(tmp_path, config_path, overrides, capsys) -> dict:
    capsys.readouterr()
    rc = cli.main(["run", str(config_path), *_sets(overrides)])
    out, err = capsys.readouterr()
    assert rc == EXIT_OK, err[-3000:]
    assert "registered version 1" in out
    return _finished_run(tmp_path)


def _check_metrics(metrics: dict, task: str, extra=()) -> None:
    keys = ["accuracy", *extra] + (["macro_f1"] if task == "classification" else [])
    for split in ("val", "test"):
        for key in keys:
            value = metrics[f"{split}_{key}"]
            assert 0.0 <= value <= 1.0, (split, key, value)
        loss = metrics[f"{split}_loss"]
        assert math.isfinite(loss) and loss > 0
        count = metrics[f"{split}_{'tokens' if task == 'tagging' else 'examples'}"]
        assert count > 0 and count == int(count)
    assert metrics["epochs_completed"] == 2


def _check_tracking(config, result: dict, export_cls) -> MlflowClient:
    """The run, its artifacts, its metrics and the registry entry in the temporary MLflow store."""
    client = MlflowClient(config.resolved_tracking_uri())
    run_id = result["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("test_accuracy", "test_loss"):  # logged once, at the end
        assert run.data.metrics[key] == pytest.approx(result["metrics"][key])
    for key in ("val_accuracy", "val_loss"):  # per epoch, and the final figure after them
        history = client.get_metric_history(run_id, key)
        assert len(history) == result["metrics"]["epochs_completed"] + 1
        assert result["metrics"][key] in [m.value for m in history]
    assert "step/grad_norm" in run.data.metrics
    assert run.data.params["model.hidden_dim"] == "8"

    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"plots", "evaluation.json", "history.json", "samples", "data", "config.yaml"} <= top, top
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/gradient_norms.png", "plots/confusion_matrix.png"} <= plots, plots
    assert all(a.file_size > 1000 for a in client.list_artifacts(run_id, "plots"))
    vocab_files = {a.path for a in client.list_artifacts(run_id, "data/vocab")}
    assert vocab_files, "the vocabulary and label files are logged with the run"

    # evaluation.json: the reports and the test confusion matrix over the data's label set.
    dst = Path(config.resolved_work_dir).parent / "downloaded"
    dst.mkdir(exist_ok=True)
    local = client.download_artifacts(run_id, "evaluation.json", str(dst))
    evaluation = json.loads(Path(local).read_text())
    assert {"valid", "test", "test_confusion"} <= set(evaluation)
    data_dir = Path(result["data_dir"])
    manifest = json.loads((data_dir / "manifest.json").read_text())
    labels = LabelSet.load(data_dir / manifest["labels"]["path"]).labels
    confusion = evaluation["test_confusion"]
    assert confusion["labels"] == labels
    assert len(confusion["matrix"]) == len(labels) and all(len(r) == len(labels) for r in confusion["matrix"])
    count_key = "test_tokens" if config.data.task == "tagging" else "test_examples"
    assert sum(map(sum, confusion["matrix"])) == result["metrics"][count_key]
    correct = sum(confusion["matrix"][i][i] for i in range(len(labels)))
    assert correct / result["metrics"][count_key] == pytest.approx(result["metrics"]["test_accuracy"])

    # registered as version 1 and, being the first, champion
    name = config.tracking.registered_model
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "1" == result["registered_version"]
    assert champion.run_id == run_id
    assert result["promotion"]["promoted"]

    # the exported model file exists and loads (raw strings in)
    path = Path(result["model_path"])
    out_dir = Path(config.resolved_work_dir) / result["run_key"] / "outputs" / result["output_key"]
    assert path.is_file() and path.parent == out_dir / "model"
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, export_cls)
    return client


def _rerun_is_reused(config_path, overrides, result, client, name, capsys) -> None:
    capsys.readouterr()
    assert cli.main(["run", str(config_path), *_sets(overrides)]) == EXIT_OK
    assert "(already finished; reused)" in capsys.readouterr().out
    again = execute(load_config(config_path, overrides))
    assert again.reused and again.mlflow_run_id == result["mlflow_run_id"] and again.run_key == result["run_key"]
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    assert len(client.search_runs([client.get_run(result["mlflow_run_id"]).info.experiment_id])) == 1


def _evaluate_matches(config_path, overrides, result, capsys, extra=()) -> dict:
    capsys.readouterr()
    rc = cli.main(["evaluate", str(config_path), *_sets(overrides), "--model", result["model_path"], "--split", "test"])
    out, err = capsys.readouterr()
    assert rc == EXIT_OK, err[-3000:]
    scores = json.loads(out)
    assert scores["split"] == "test"
    for key in ("accuracy", "loss", *extra):
        assert scores[key] == pytest.approx(result["metrics"][f"test_{key}"], rel=1e-6, abs=1e-9), key
    return scores


def _tag(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["tag", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _check_tag_cli(tmp_path, config, result, tag_names, capsys) -> None:
    name = config.tracking.registered_model
    registry = ["--model", f"models:/{name}@champion", "--tracking-uri", _tracking_uri(tmp_path)]
    sentences = ["Bu kitap çok güzel .", "Ankara'da yaşıyorum , sen nerede oturuyorsun ?"]

    # texts as arguments, text format: one line of token/TAG pairs per input
    rc, out, err = _tag(capsys, *registry, *sentences)
    assert rc == EXIT_OK, err[-3000:]
    lines = out.splitlines()
    assert len(lines) == len(sentences)
    for line in lines:
        pairs = [p.rsplit("/", 1) for p in line.split(" ")]
        assert all(len(p) == 2 and p[1] in tag_names for p in pairs), line
    # case folding (when the config asks for it) happens inside the exported model
    assert lines[0].startswith("bu/" if config.data.lowercase else "Bu/")

    # --input FILE (blank lines skipped): conll blocks and json lines, one per non-blank line
    texts = sentences + ["Türkiye'nin başkenti Ankara'dır ."]
    path = tmp_path / "sentences.txt"
    path.write_text(texts[0] + "\n\n" + "\n".join(texts[1:]) + "\n   \n", encoding="utf-8")
    rc, out, err = _tag(capsys, *registry, "--input", str(path), "--format", "conll")
    assert rc == EXIT_OK, err[-3000:]
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == len(texts)
    conll = [[line.split("\t") for line in b.strip("\n").splitlines()] for b in blocks]
    assert all(len(row) == 2 and row[1] in tag_names for block in conll for row in block)

    rc, out, err = _tag(capsys, *registry, "--input", str(path), "--format", "json", "--batch-size", "2")
    assert rc == EXIT_OK, err[-3000:]
    objects = [json.loads(line) for line in out.splitlines()]
    assert len(objects) == len(texts)
    for obj, block in zip(objects, conll):
        assert obj["tokens"] == [row[0] for row in block] and obj["tags"] == [row[1] for row in block]
        assert len(obj["tokens"]) == len(obj["tags"]) > 0

    # the run's model directory (a local path) gives what the registry's champion gives
    rc, out, err = _tag(capsys, "--model", str(Path(result["model_path"]).parent), "--input", str(path),
                        "--format", "json")
    assert rc == EXIT_OK, err[-3000:]
    assert [json.loads(line) for line in out.splitlines()] == objects

    # a tagger is not a classifier
    capsys.readouterr()
    assert cli.main(["classify", "--model", result["model_path"], "some text"]) == EXIT_FAILED
    assert "is not a classifier" in capsys.readouterr().err


# ============================================================================== twt (tagging)
@needs_twt
@pytest.mark.parametrize("config_name, extra", [("twt_pos", []), ("twt_pos_crf", SMALL_CHARS)],
                         ids=["twt_pos", "twt_pos_crf"])
def test_twt_tagging_run_registers_tags_and_evaluates(workspace, capsys, config_name, extra):
    from keras_models.export import SequenceTaggerExport

    config_path = _shipped_config(workspace, config_name)
    overrides = _overrides(workspace, SMALL_DATA, extra)
    config = load_config(config_path, overrides)
    result = _run(workspace, config_path, overrides, capsys)
    _check_metrics(result["metrics"], "tagging")
    client = _check_tracking(config, result, SequenceTaggerExport)

    manifest = json.loads((Path(result["data_dir"]) / "manifest.json").read_text())
    assert manifest["splits"]["train"]["examples"] == 200
    assert manifest["splits"]["valid"]["examples"] <= 40 and manifest["splits"]["test"]["examples"] <= 40
    assert ("chars" in manifest) == (config_name == "twt_pos_crf")
    model = keras.saving.load_model(result["model_path"])
    assert model.tagger.use_crf == (config_name == "twt_pos_crf")
    assert bool(model.char_vocabulary) == (config_name == "twt_pos_crf")
    tag_names = model.tag_names
    assert "NOUN" in tag_names and "PUNCT" in tag_names
    # the logged sample: token/TAG pairs of a test sentence
    assert all(p.rsplit("/", 1)[1] in tag_names for p in result["sample"].split(" "))

    _rerun_is_reused(config_path, overrides, result, client, config.tracking.registered_model, capsys)
    _check_tag_cli(workspace, config, result, tag_names, capsys)
    _evaluate_matches(config_path, overrides, result, capsys)


# ========================================================================= bbc (classification)
@needs_bbc
def test_bbc_classification_run_registers_classifies_and_evaluates(workspace, capsys):
    from keras_models.export import TextClassifierExport

    config_path = _shipped_config(workspace, "bbc_topics")
    overrides = _overrides(workspace, BBC_DATA)
    config = load_config(config_path, overrides)
    result = _run(workspace, config_path, overrides, capsys)
    _check_metrics(result["metrics"], "classification")
    client = _check_tracking(config, result, TextClassifierExport)

    topics = ["business", "entertainment", "politics", "sports", "tech"]  # the package's folder names
    manifest = json.loads((Path(result["data_dir"]) / "manifest.json").read_text())
    for split in ("train", "valid", "test"):  # stratified: every topic in every split
        assert sorted(manifest["splits"][split]["label_counts"]) == topics, split
    model = keras.saving.load_model(result["model_path"])
    assert model.label_names == topics
    assert result["sample"].split(" <- ", 1)[0] in topics

    _rerun_is_reused(config_path, overrides, result, client, "bbc-topics", capsys)

    # classify: --top-k 2 --format json, one object per input, the two best labels in order
    registry = ["--model", "models:/bbc-topics@champion", "--tracking-uri", _tracking_uri(workspace)]
    texts = ["Shares fell sharply after the results", "The striker scored twice in the cup final",
             "The new phone has a faster chip"]
    capsys.readouterr()
    rc = cli.main(["classify", *registry, "--top-k", "2", "--format", "json", *texts])
    out, err = capsys.readouterr()
    assert rc == EXIT_OK, err[-3000:]
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["text"] for o in objects] == texts
    for obj in objects:
        ranked = obj["labels"]
        assert len(ranked) == 2 and ranked[0]["label"] != ranked[1]["label"]
        assert {r["label"] for r in ranked} <= set(topics)
        assert 1.0 >= ranked[0]["probability"] >= ranked[1]["probability"] >= 0.0
    # the same texts through the loaded model file: same best label and probability
    direct = model(tf.constant(texts))
    for obj, label, probs in zip(objects, direct["label"].numpy(), direct["probabilities"].numpy()):
        assert obj["labels"][0]["label"] == label.decode()
        assert obj["labels"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)

    # --input, text format (label<TAB>probability), --top-k above the number of classes is capped
    path = workspace / "texts.txt"
    path.write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    capsys.readouterr()
    rc = cli.main(["classify", "--model", str(Path(result["model_path"]).parent), "--input", str(path),
                   "--top-k", "9"])
    out, err = capsys.readouterr()
    assert rc == EXIT_OK, err[-3000:]
    lines = out.splitlines()
    assert len(lines) == len(texts)
    for line, obj in zip(lines, objects):
        fields = line.split("\t")
        assert len(fields) == 2 * len(topics) and sorted(fields[0::2]) == topics
        assert fields[0] == obj["labels"][0]["label"]
        assert sum(float(p) for p in fields[1::2]) == pytest.approx(1.0, abs=1e-3)

    # a classifier is not a tagger: exit code 1 and a message that says so
    rc, out, err = _tag(capsys, *registry, "some text")
    assert rc == EXIT_FAILED and out == ""
    assert "is not a tagger" in err and "TextClassifierExport" in err

    _evaluate_matches(config_path, overrides, result, capsys, extra=("macro_f1",))


# ===================================================================== CoNLL-2003-style BIO NER
PEOPLE = [["John", "Smith"], ["Mary"], ["Angela", "Merkel"], ["Ali"], ["Ayşe", "Yılmaz"]]
PLACES = [["Paris"], ["New", "York"], ["Berlin"], ["Ankara"], ["Los", "Angeles"]]
ORGS = [["EU"], ["Reuters"], ["United", "Nations"], ["BBC"]]
TEMPLATES = [
    ("{PER} visited {LOC} yesterday .", None),
    ("{ORG} said {PER} will travel to {LOC} .", None),
    ("The {ORG} office in {LOC} is closed .", None),
    ("{PER} met {PER} .", None),
    ("Nothing happened today .", None),
]


def _span(words, kind):
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def _conll_2003(n_sentences: int, seed: int = 0) -> str:
    """A CoNLL-2003-style file: -DOCSTART- lines, token POS CHUNK NER columns, blank lines between sentences."""
    rng = random.Random(seed)
    pools = {"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}
    lines = ["-DOCSTART- -X- -X- O", ""]
    for s in range(n_sentences):
        if s and s % 25 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        template, _ = rng.choice(TEMPLATES)
        for word in template.split():
            pairs = _span(rng.choice(pools[word[1:-1]]), word[1:-1]) if word.startswith("{") else [(word, "O")]
            lines += [f"{w} NNP I-NP {tag}" for w, tag in pairs]
        lines.append("")
    return "\n".join(lines) + "\n"


def test_bio_columns_run_reports_span_scores(workspace, capsys):
    corpus = workspace / "ner.txt"
    corpus.write_text(_conll_2003(160), encoding="utf-8")
    config_path = workspace / "ner.yaml"
    config_path.write_text(json.dumps({
        "name": "tiny_ner",
        "data": {"dataset": "columns", "files": [str(corpus)], "tag_scheme": "bio",
                 "split": {"method": "hash", "valid": 0.2, "test": 0.2, "seed": 0}},
        "model": {"type": "tagger", "cell": "gru"},
        "training": {"optimizer": {"name": "adam", "learning_rate": 0.01}},
        "tracking": {"experiment": "tests", "registered_model": "tiny-ner", "metric": "val_f1"},
    }))
    overrides = _overrides(workspace)
    config = load_config(config_path, overrides)
    assert config.tracking.greater_is_better is True
    result = _run(workspace, config_path, overrides, capsys)
    metrics = result["metrics"]
    _check_metrics(metrics, "tagging", extra=("f1", "precision", "recall"))

    client = MlflowClient(config.resolved_tracking_uri())
    run = client.get_run(result["mlflow_run_id"])
    for key in ("val_f1", "val_precision", "val_recall", "test_f1"):
        assert run.data.metrics[key] == pytest.approx(metrics[key])
    champion = client.get_model_version_by_alias("tiny-ner", "champion")
    assert str(champion.version) == "1"

    model = keras.saving.load_model(result["model_path"])
    assert sorted(model.tag_names) == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    (workspace / "downloaded").mkdir()
    local = client.download_artifacts(result["mlflow_run_id"], "evaluation.json", str(workspace / "downloaded"))
    evaluation = json.loads(Path(local).read_text())
    assert set(evaluation["test"]["per_type"]) <= {"LOC", "ORG", "PER"}  # span types, not tags

    rc, out, err = _tag(capsys, "--model", result["model_path"], "--format", "json", "John Smith visited Paris .")
    assert rc == EXIT_OK, err[-3000:]
    obj = json.loads(out)
    assert obj["tokens"] == ["John", "Smith", "visited", "Paris", "."]  # whitespace split, case kept
    assert all(t in model.tag_names for t in obj["tags"])
    _evaluate_matches(config_path, overrides, result, capsys, extra=("f1", "precision", "recall"))


def test_mlflow_run_metrics_are_the_final_evaluation(workspace, monkeypatch, capsys):
    """The final validation figure can differ from the last epoch's (restore_best_weights, early
    stopping); made deterministic here with an evaluator whose accuracy drops at every call."""
    from keras_models.evaluation import TaggingEvaluator

    original = TaggingEvaluator.__call__

    def declining(self, model):
        self._calls = getattr(self, "_calls", 0) + 1
        scores = original(self, model)
        return {**scores, "accuracy": 0.9 - 0.1 * self._calls}

    original_items = TaggingEvaluator.score_items

    def declining_items(self, model, vocabulary):  # the final evaluation (with per-item statistics)
        self._calls = getattr(self, "_calls", 0) + 1
        scores, items = original_items(self, model, vocabulary)
        return {**scores, "accuracy": 0.9 - 0.1 * self._calls}, items

    monkeypatch.setattr(TaggingEvaluator, "__call__", declining)
    monkeypatch.setattr(TaggingEvaluator, "score_items", declining_items)
    corpus = workspace / "ner.txt"
    corpus.write_text(_conll_2003(60), encoding="utf-8")
    config_path = workspace / "ner.yaml"
    config_path.write_text(json.dumps({
        "name": "tiny_ner", "data": {"dataset": "columns", "files": [str(corpus)], "tag_scheme": "bio",
                                     "split": {"valid": 0.2, "test": 0.2}},
        "tracking": {"experiment": "tests", "registered_model": "tiny-ner"},
    }))
    overrides = _overrides(workspace, ["training.max_steps_per_epoch=1"])
    result = _run(workspace, config_path, overrides, capsys)
    assert result["metrics"]["val_accuracy"] == pytest.approx(0.6)  # epochs 1, 2: 0.8, 0.7; the final one: 0.6
    run = MlflowClient(_tracking_uri(workspace)).get_run(result["mlflow_run_id"])
    assert run.data.metrics["val_accuracy"] == pytest.approx(result["metrics"]["val_accuracy"])
