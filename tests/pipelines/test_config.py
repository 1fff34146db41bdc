"""pipelines.config: strict types (no coercion of YAML scalars), errors that name the key, every shipped config."""

from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError, DataConfig, ReaderConfig, dump_config, load_config, parse_config

CONFIGS = sorted(Path(__file__).resolve().parents[2].glob("configs/*.yaml"))


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path):
    config = load_config(path)
    assert config.name
    # the resolved config (as logged) validates again, strictly, to the same config
    assert parse_config(yaml.safe_load(dump_config(config))) == config


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("training", "epochs", True),
        ("data", "lowercase", "yes"),
        ("data", "max_vocab_size", "50"),
        ("training", "batch_size", 2.0),
        ("data", "dedupe", 1),
        ("model", "hidden_dim", "8"),
        ("training.optimizer", "learning_rate", "0.1"),
        ("data.reader", "token_column", False),
        ("data", "files", "corpus.txt"),
    ],
)
def test_yaml_scalars_of_the_wrong_type_are_errors_naming_the_key(section, key, value):
    raw = {"name": "x"}
    node = raw
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert f"{section}.{key}:" in str(err.value)


def test_overrides_are_strict_too(tmp_path):
    path = _write(tmp_path, "name: x\n")
    with pytest.raises(ConfigError, match=r"training\.epochs: Input should be a valid integer"):
        load_config(path, ["training.epochs=true"])
    with pytest.raises(ConfigError, match=r"data\.lowercase:"):
        load_config(path, ["data.lowercase='yes'"])  # (unquoted, YAML 1.1 reads yes as true)
    with pytest.raises(ConfigError, match=r"data\.max_vocab_size:"):
        load_config(path, ["data.max_vocab_size='50'"])
    assert load_config(path, ["training.epochs=3", "data.max_vocab_size=50"]).training.epochs == 3


def test_what_yaml_gives_still_validates(tmp_path):
    path = _write(tmp_path, """
name: x
data:
  dataset: jsonl
  files: [a.txt, "b/*.txt"]
  lowercase: true
  max_vocab_size: 50
  max_lines: {train: 10}
  split: {method: interleave, valid: 0.1, test: 0, period: 10}
  reader: {separator: "\\t", label_types: any}
  target: {level: char}
model:
  cell: gru
  dropout: 0
  mlp_dims: [8, 4]
training:
  devices: ["/cpu:0"]
  optimizer: {name: adam, learning_rate: 1}
  clip_norm: 5
  schedule: {decay: epoch, decay_rate: 1}
generate: {temperature: 0, top_p: 1}
""")
    config = load_config(path, ["training.optimizer.momentum=0", "decode.length_penalty=2"])
    assert config.data.files == ["a.txt", "b/*.txt"] and config.data.max_lines == {"train": 10}
    assert config.data.split.test == 0.0 and isinstance(config.data.split.test, float)
    assert config.training.optimizer.learning_rate == 1.0 and isinstance(config.training.optimizer.learning_rate, float)
    assert config.training.clip_norm == 5.0 and config.model.mlp_dims == [8, 4]
    assert config.data.reader.separator == "\t" and config.data.reader.label_types == "any"
    assert config.data.target.level == "char" and config.model.cell == "gru"
    assert config.decode.length_penalty == 2.0 and config.generate.temperature == 0.0


def test_reader_label_types_and_max_token_chars():
    assert ReaderConfig().label_types == "string"
    data = DataConfig(dataset="text", files=["a"])
    assert data.max_token_chars == 100
    with pytest.raises(ConfigError, match=r"data\.reader\.label_types:"):
        parse_config({"name": "x", "data": {"reader": {"label_types": "int"}}})
    with pytest.raises(ConfigError, match=r"data\.max_token_chars:"):
        parse_config({"name": "x", "data": {"max_token_chars": 0}})
    with pytest.raises(ConfigError, match=r"data\.max_token_chars:"):
        parse_config({"name": "x", "data": {"max_token_chars": "100"}})


def test_token_and_tag_column_must_differ():
    with pytest.raises(ConfigError, match=r"data\.reader.*token_column and tag_column"):
        parse_config({"name": "x", "data": {"reader": {"token_column": 1, "tag_column": 1}}})


def test_each_model_type_has_its_own_settings():
    from pipelines.config import ClassifierConfig, LanguageModelConfig, Seq2SeqConfig, TaggerConfig

    assert isinstance(parse_config({"name": "x"}).model, LanguageModelConfig)  # the data task's model
    assert isinstance(parse_config({"name": "x", "data": {"dataset": "twt"}}).model, TaggerConfig)
    assert isinstance(parse_config({"name": "x", "data": {"dataset": "bbc"}, "model": {"pooling": "max"}}).model,
                      ClassifierConfig)
    assert isinstance(parse_config({"name": "x", "data": {"dataset": "cmudict"}}).model, Seq2SeqConfig)
    with pytest.raises(ConfigError, match=r"model\.pooling: not a setting of model.type 'tagger' \(it belongs to classifier\)"):
        parse_config({"name": "x", "data": {"dataset": "twt"}, "model": {"pooling": "max"}})
    with pytest.raises(ConfigError, match=r"model\.attention: not a setting of model.type 'classifier'"):
        parse_config({"name": "x", "data": {"dataset": "bbc"}, "model": {"attention": "dot"}})
    with pytest.raises(ConfigError, match=r"model\.use_crf: not a setting of model.type 'lm'"):
        parse_config({"name": "x", "model": {"use_crf": True}})
    with pytest.raises(ConfigError, match=r"model\.poolng: unknown key"):
        parse_config({"name": "x", "data": {"dataset": "bbc"}, "model": {"poolng": "max"}})
    with pytest.raises(ConfigError, match="cannot train on 'lm' data"):
        parse_config({"name": "x", "model": {"type": "tagger"}})


def test_choice_lists_come_from_the_registries(monkeypatch):
    """cell, attention, pooling, tokenizer modes and datasets are checked against the names where they
    are defined, not a copy in the config: a new entry there is accepted here without an edit."""
    from keras_models.layers import attention, cells, pooling

    with pytest.raises(ConfigError, match=r"model\.cell: the cell must be one of 'rnn', 'lstm', 'gru', got 'lsmt'"):
        parse_config({"name": "x", "model": {"cell": "lsmt"}})
    with pytest.raises(ConfigError, match=r"model\.attention: the attention score must be one of 'dot'"):
        parse_config({"name": "x", "data": {"dataset": "cmudict"}, "model": {"attention": "luong"}})
    with pytest.raises(ConfigError, match=r"data\.dataset: data.dataset must be one of 'ptb'"):
        parse_config({"name": "x", "data": {"dataset": "ptbb"}})
    with pytest.raises(ConfigError, match=r"data\.normalization: the normalization must be one of"):
        parse_config({"name": "x", "data": {"normalization": "NFX"}})
    monkeypatch.setattr(cells, "CELL_NAMES", (*cells.CELL_NAMES, "mycell"))
    monkeypatch.setattr(attention, "SCORES", (*attention.SCORES, "luong"))
    monkeypatch.setattr(pooling, "POOLING_MODES", (*pooling.POOLING_MODES, "min"))
    assert parse_config({"name": "x", "model": {"cell": "mycell"}}).model.cell == "mycell"
    assert parse_config({"name": "x", "data": {"dataset": "cmudict"}, "model": {"attention": "luong"}})
    assert parse_config({"name": "x", "data": {"dataset": "bbc"}, "model": {"pooling": "min"}})


def test_data_task_defaults_to_the_task_that_reads_most_of_what_the_format_provides():
    from pipelines import tasks
    from pipelines.config import CORPORA, FILE_ALIASES, dataset_formats, file_datasets

    cases = {  # dataset (+ reader options) -> (format, provides, default task)
        ("ptb", ()): ("lines", {"text"}, "lm"),
        ("text", ()): ("lines", {"text"}, "lm"),
        ("records", ()): ("records", {"text"}, "lm"),
        ("twt", ()): ("conllu", {"text", "tags"}, "tagging"),
        ("conllu", ()): ("conllu", {"text", "tags"}, "tagging"),
        ("slash_tagged", ()): ("slash_tagged", {"text", "tags"}, "tagging"),
        ("bbc", ()): ("document", {"text", "label"}, "classification"),
        ("jsonl", ()): ("jsonl", {"text", "label"}, "classification"),
        ("csv", ()): ("csv", {"text", "label"}, "classification"),
        ("csv", (("target_field", "y"),)): ("csv", {"text", "target"}, "seq2seq"),
        ("cmudict", ()): ("cmudict", {"text", "target"}, "seq2seq"),
    }
    for (dataset, reader), (fmt, provides, task) in cases.items():
        files = ["a"] if dataset in file_datasets() else []
        data = DataConfig(dataset=dataset, files=files, reader=dict(reader))
        assert (data.format, data.provides, data.task) == (fmt, provides, task), dataset
        assert tasks.default_for(data.provides).name == task
    assert set(CORPORA) <= set(dataset_formats()) and set(FILE_ALIASES) <= set(file_datasets())
    assert not set(CORPORA) & set(file_datasets())
    # the model and the promotion metric follow the task
    for dataset, model, metric, greater in [("ptb", "lm", "val_perplexity", False),
                                            ("twt", "tagger", "val_accuracy", True),
                                            ("bbc", "classifier", "val_accuracy", True),
                                            ("cmudict", "seq2seq", "val_wer", False)]:
        config = parse_config({"name": "x", "data": {"dataset": dataset}})
        task = tasks.get(config.data.task)
        assert (config.model.type, task.model_type) == (model, model)
        assert (task.metric, task.greater_is_better) == (metric, greater)
        assert (config.tracking.metric, config.tracking.greater_is_better) == (metric, greater)


def test_any_task_whose_needs_the_format_provides_is_accepted():
    # a language model over the words of a tagged or labelled corpus, or over one side of pairs
    for dataset in ("conllu", "jsonl", "tsv", "slash_tagged", "csv"):
        data = DataConfig(dataset=dataset, files=["a"], task="lm")
        assert data.task == "lm" and data.format == dataset
    assert DataConfig(dataset="twt", task="lm").format == "conllu"
    assert DataConfig(dataset="cmudict", task="lm").format == "cmudict"
    config = parse_config({"name": "x", "data": {"dataset": "conllu", "files": ["a"], "task": "lm"}})
    assert config.model.type == "lm" and config.tracking.metric == "val_perplexity"


@pytest.mark.parametrize("dataset, reader, task, needs, provides, missing, fits", [
    ("text", {}, "tagging", "tags, text", "text", "tags", "lm"),
    ("ptb", {}, "classification", "label, text", "text", "label", "lm"),
    ("conllu", {}, "classification", "label, text", "tags, text", "label", "lm, tagging"),
    ("jsonl", {}, "seq2seq", "target, text", "label, text", "target", "lm, classification"),
    ("csv", {"target_field": "y"}, "classification", "label, text", "target, text", "label", "lm, seq2seq"),
])
def test_a_task_the_format_cannot_feed_is_an_error_naming_needs_and_provides(dataset, reader, task, needs, provides,
                                                                             missing, fits):
    import re

    raw = {"name": "x", "data": {"dataset": dataset, "task": task, "reader": reader}}
    if dataset not in ("ptb",):
        raw["data"]["files"] = ["a"]
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    message = str(err.value)
    assert f"data.task {task!r} needs {needs}, but data.dataset {dataset!r}" in message
    assert re.search(rf"provides {provides} \(missing {missing}\); tasks it can feed: {fits}", message), message
