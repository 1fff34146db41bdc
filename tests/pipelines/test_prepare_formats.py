"""The formats added after the task registry (CSV, slash-tagged sentences, record-separated text) through
the whole prepare job, each feeding the task(s) it fits, and a format feeding a task it was not written
for (a language model over a CoNLL-U file's words)."""

import pytest

from pipelines import prepare
from pipelines.config import ConfigError, DataConfig, SplitConfig, parse_config
from pipelines.readers import ReaderConfig
from preprocessing.input_fns import load_examples, lm_token_stream
from preprocessing.vocab import LabelSet, Vocabulary

ALL_TRAIN = SplitConfig(valid=0.0, test=0.0)  # every record in train: exact contents are known


def _rejected(data_dir):
    import json

    path = data_dir / "rejected" / "rejected-00000-of-00001.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_csv_for_classification_by_column_name(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(b'id,review,stars\r\n1,"good, really good",pos\r\n2,"said ""meh""\nthen left",neg\r\n'
                     b'3,fine,\r\n4,"great",pos\r\n')
    config = DataConfig(dataset="csv", files=[str(path)], reader=ReaderConfig(text_field="review", label_field="stars"),
                        split=ALL_TRAIN, dedupe=False, output_dir=str(tmp_path / "out"))
    assert config.task == "classification"
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    assert manifest["task"] == "classification" and manifest["features"] == {"ids": "sequence", "label": "scalar"}
    labels = LabelSet.load(manifest.file("labels")).labels
    assert labels == ["neg", "pos"]
    ex = load_examples(data_dir, "train")
    vocab = Vocabulary.load(manifest.file("vocab"))
    assert [vocab.decode(x) for x in ex.ids] == [["good,", "really", "good"], ['said', '"meh"', "then", "left"],
                                                 ["great"]]
    assert [labels[i] for i in ex.labels] == ["pos", "neg", "pos"]
    assert [(r["line"], r["reason"]) for r in _rejected(data_dir)] == [(5, "missing_label")]  # record 3


def test_csv_for_seq2seq_with_source_and_target_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("word,phones,extra\ncat,K AE T,x\ndog,D AO G,y\n", encoding="utf-8")
    raw = {"name": "g2p", "data": {"dataset": "csv", "files": [str(path)], "task": "seq2seq",
                                   "reader": {"source_field": "word", "target_field": "phones"},
                                   "level": "char", "split": {"valid": 0.0, "test": 0.0},
                                   "output_dir": str(tmp_path / "out")}}
    config = parse_config(raw)
    assert config.model.type == "seq2seq"
    data_dir = prepare.prepare(config.data)
    manifest = prepare.load_manifest(data_dir)
    ex = load_examples(data_dir, "train")
    source, target = Vocabulary.load(manifest.file("vocab")), Vocabulary.load(manifest.file("target_vocab"))
    assert ["".join(source.decode(x)) for x in ex.ids] == ["cat", "dog"]
    assert [target.decode(x) for x in ex.targets] == [["K", "AE", "T"], ["D", "AO", "G"]]
    # without a target column the CSV provides text and labels: seq2seq does not fit
    with pytest.raises(ConfigError, match="needs target, text.*provides label, text"):
        parse_config({**raw, "data": {**raw["data"], "reader": {}}})


def test_slash_tagged_sentences_for_tagging(tmp_path):
    path = tmp_path / "tagged.txt"
    path.write_text("The/DT dog/NN barked/VBD ./.\n\n1\\/2/CD of/IN it/PRP\nbad token/\n", encoding="utf-8")
    config = DataConfig(dataset="slash_tagged", files=[str(path)], split=ALL_TRAIN, output_dir=str(tmp_path / "out"))
    assert config.task == "tagging"
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    tags = LabelSet.load(manifest.file("labels"))
    vocab = Vocabulary.load(manifest.file("vocab"))
    ex = load_examples(data_dir, "train")
    assert [vocab.decode(x) for x in ex.ids] == [["The", "dog", "barked", "."], ["1/2", "of", "it"]]
    assert [tags.decode(t) for t in ex.tags] == [["DT", "NN", "VBD", "."], ["CD", "IN", "PRP"]]
    assert [(r["line"], r["reason"]) for r in _rejected(data_dir)] == [(4, "missing_tag")]


@pytest.mark.parametrize("separator, text, records", [
    ("%", "a fortune\non two lines\n%\n\nanother one\n%\n%\n", [["a", "fortune", "on", "two", "lines"],
                                                                ["another", "one"]]),
    ("", "first paragraph\nstill first\n\n\nsecond\n", [["first", "paragraph", "still", "first"], ["second"]]),
])
def test_record_separated_text_for_language_models(tmp_path, separator, text, records):
    path = tmp_path / "fortunes.txt"
    path.write_text(text, encoding="utf-8")
    config = DataConfig(dataset="records", files=[str(path)], reader=ReaderConfig(record_separator=separator),
                        split=ALL_TRAIN, output_dir=str(tmp_path / "out"))
    assert config.task == "lm"
    data_dir = prepare.prepare(config)
    vocab = Vocabulary.load(prepare.load_manifest(data_dir).file("vocab"))
    expected = [t for r in records for t in r + ["<eos>"]]  # each record one example, ending with <eos>
    assert vocab.decode(lm_token_stream(data_dir, "train")) == expected
    assert prepare.load_manifest(data_dir)["splits"]["train"]["examples"] == len(records)


def test_a_tagged_corpus_can_feed_a_language_model(tmp_path):
    """The CoNLL-U reader provides text and tags; data.task: lm uses the words and ignores the tags."""
    path = tmp_path / "ud.conllu"
    path.write_text("1\tDogs\tdog\tNOUN\t_\t_\t0\troot\t_\t_\n2\tbark\tbark\tVERB\t_\t_\t1\tdep\t_\t_\n\n"
                    "1\tCats\tcat\tNOUN\t_\t_\t0\troot\t_\t_\n", encoding="utf-8")
    config = DataConfig(dataset="conllu", files=[str(path)], task="lm", split=ALL_TRAIN,
                        output_dir=str(tmp_path / "out"))
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    assert manifest["task"] == "lm" and "labels" not in manifest
    vocab = Vocabulary.load(manifest.file("vocab"))
    assert vocab.decode(lm_token_stream(data_dir, "train")) == ["Dogs", "bark", "<eos>", "Cats", "<eos>"]
