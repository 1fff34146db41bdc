"""Per-item statistics of every evaluator: their sums give exactly the evaluators' figures, items are
keyed by content (the same keys under another vocabulary), and the ``.npz`` file is checked on load.

The evaluator tests use splits in memory; the task tests prepare tiny corpora, so every task's
``evaluate`` → ``item_stats`` runs on splits streamed from their shards.
"""

import math
import random
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_models.evaluation import ClassificationEvaluator, Seq2SeqEvaluator, StreamEvaluator, TaggingEvaluator
from keras_models import evaluation
from keras_models.item_stats import ItemStats, item_key
from keras_models.models.language_model import RNNLanguageModel
from keras_models.models.seq2seq import Seq2SeqModel
from keras_models.models.tagger import RNNTagger
from pipelines import tasks
from pipelines.config import parse_config
from pipelines.prepare import prepare
from pipelines.tasks.base import metric_split
from preprocessing.input_fns import Examples, bptt_layout, lm_token_stream
from preprocessing.manifest import load_manifest
from preprocessing.streams import TokenStream
from preprocessing.vocab import EOS_ID, RESERVED_TOKENS

WORDS = "the cat sat on a mat dog and end big small red".split()
VOCAB = list(RESERVED_TOKENS) + WORDS  # 16 tokens
# the same words under other ids, and a vocabulary without "red" (it reads <unk> there)
OTHER = list(RESERVED_TOKENS) + WORDS[::-1]
SHORT = list(RESERVED_TOKENS) + WORDS[:-1]
TAG_NAMES = ["B-X", "I-X", "O"]


def _encode(vocab, words):
    index = {t: i for i, t in enumerate(vocab)}
    return np.array([index.get(w, 1) for w in words], np.int32)


def _sentences(n=12, seed=0):
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(1, 8))] for _ in range(n)]


# ------------------------------------------------------------------------------ language models
def _lm(vocab_size=len(VOCAB)):
    keras.utils.set_random_seed(3)
    model = RNNLanguageModel(vocab_size, cell="lstm", num_layers=1, embedding_dim=4, hidden_dim=4, seed=3)
    model.build((None, None))
    return model


def test_lm_sentence_losses_add_up_to_the_stream_perplexity():
    sentences = _sentences(30)
    encoded = [np.append(_encode(VOCAB, s), EOS_ID) for s in sentences]
    stream = np.concatenate(encoded)
    layout = bptt_layout(stream, 3, 4)
    model = _lm()
    ev = StreamEvaluator(layout, jit_compile=False)
    scores, items = ev.score_items(model, VOCAB, stream=stream)
    assert scores == ev(model)
    assert len(items) == len(sentences)
    assert list(items.keys) == [item_key(evaluation.StreamEvaluator.ITEM_KIND, s + ["<eos>"]) for s in sentences]
    stats = items.stats["perplexity"]
    assert stats[:, 1].sum() == scores["tokens"] == layout.num_targets
    for name in ("loss", "perplexity", "bpc"):
        np.testing.assert_array_equal(items.stats[name], stats)
    assert items.score("perplexity") == pytest.approx(scores["perplexity"], rel=1e-9)
    assert items.score("loss") == pytest.approx(scores["loss"], rel=1e-9)
    assert items.score("bpc") == pytest.approx(scores["bits_per_token"], rel=1e-9)
    # reference: each row in one call (state carried implicitly), each target's loss to its sentence
    logits, _ = model.forward(layout.inputs)
    xent = np.asarray(keras.losses.sparse_categorical_crossentropy(layout.targets, logits, from_logits=True))
    sentence_of = np.repeat(np.arange(len(encoded)), [len(e) for e in encoded])
    row = layout.inputs.shape[1] + 1
    nll, count = np.zeros(len(encoded)), np.zeros(len(encoded))
    for b in range(3):
        for c in range(row - 1):
            nll[sentence_of[b * row + c + 1]] += xent[b, c]
            count[sentence_of[b * row + c + 1]] += 1
    np.testing.assert_array_equal(stats[:, 1], count)
    np.testing.assert_allclose(stats[:, 0], nll, rtol=1e-5, atol=1e-6)
    assert count[-1] < len(encoded[-1])  # the tail the layout drops scores nothing
    # without the stream: the sentences of the ids laid out (the last one cut where the layout ends)
    _, laid_out = ev.score_items(model, VOCAB)
    assert sum(len(e) for e in encoded[: len(laid_out) - 1]) < 3 * row
    assert list(laid_out.keys[:-1]) == list(items.keys[: len(laid_out) - 1])
    assert laid_out.score("perplexity") == pytest.approx(scores["perplexity"], rel=1e-9)


def test_lm_keys_are_the_same_under_another_vocabulary():
    sentences = _sentences(20, seed=1)
    keys = {}
    for name, vocab in (("vocab", VOCAB), ("other", OTHER), ("short", SHORT)):
        stream = np.concatenate([np.append(_encode(vocab, s), EOS_ID) for s in sentences])
        _, items = StreamEvaluator(bptt_layout(stream, 2, 5), jit_compile=False).score_items(_lm(), vocab,
                                                                                            stream=stream)
        keys[name] = list(items.keys)
    assert keys["vocab"] == keys["other"]
    has_red = ["red" in s for s in sentences]
    assert any(has_red) and not all(has_red)
    for same, a, b in zip(has_red, keys["vocab"], keys["short"]):
        assert (a == b) != same  # a sentence with an unknown token is another item


def test_lm_with_ids_outside_the_vocabulary_is_an_error():
    stream = np.array([4, 5, 20, 3, 4, 5, 6, 3, 7, 3], np.int32)
    with pytest.raises(ValueError, match="token id 20 is outside the vocabulary of 16"):
        StreamEvaluator(bptt_layout(stream, 2, 2), jit_compile=False).score_items(_lm(21), VOCAB)


# --------------------------------------------------------------------------------------- tagging
def _tagged(vocab, seed=4, unseen=False):
    rng = np.random.default_rng(seed)
    sentences = _sentences(11, seed)
    tags = [rng.integers(0, len(TAG_NAMES) + (1 if unseen else 0), len(s)).astype(np.int32) for s in sentences]
    return sentences, Examples(task="tagging", ids=[_encode(vocab, s) for s in sentences], tags=tags)


def _tagger(crf=False):
    keras.utils.set_random_seed(5)
    m = RNNTagger(len(VOCAB), len(TAG_NAMES), cell="gru", embedding_dim=4, hidden_dim=4, use_crf=crf, seed=5)
    m.build((None, None))
    return m


@pytest.mark.parametrize("scheme,crf,unseen", [("bio", False, False), ("bioes", True, True), ("plain", False, True)])
def test_tagging_sentence_statistics_give_the_evaluators_figures(scheme, crf, unseen):
    names = TAG_NAMES if scheme != "bioes" else ["B-X", "E-X", "S-X"]
    sentences, ex = _tagged(VOCAB, unseen=unseen)
    extra = {"unseen_names": ["S-NEW"]} if unseen else {}
    ev = TaggingEvaluator(ex, names, scheme=scheme, batch_size=3, **extra)
    model = _tagger(crf)
    scores, items = ev.score_items(model, VOCAB)
    assert scores == ev(model)
    assert len(items) == len(sentences)
    assert items.score("accuracy") == scores["accuracy"]
    np.testing.assert_array_equal(items.stats["accuracy"][:, 1], [len(s) for s in sentences])
    if scheme == "plain":
        assert set(items.stats) == {"accuracy"}
    else:
        assert 0 < scores["f1"] < 1
        for name in ("f1", "precision", "recall"):
            assert items.score(name) == scores[name]
    all_names = names + extra.get("unseen_names", [])
    assert list(items.keys) == [item_key(evaluation.TaggingEvaluator.ITEM_KIND, s, [all_names[t] for t in tags])
                                for s, tags in zip(sentences, ex.tags)]


def test_tagging_keys_are_the_same_under_another_vocabulary():
    keys = [list(TaggingEvaluator(_tagged(v)[1], TAG_NAMES, "bio", 4).score_items(_tagger(), v)[1].keys)
            for v in (VOCAB, OTHER)]
    assert keys[0] == keys[1] and len(set(keys[0])) == len(keys[0])


# --------------------------------------------------------------------------------- classification
class FixedLogits(keras.Model):
    """Logits looked up from the first token id."""

    def __init__(self, table):
        super().__init__()
        self.table = np.asarray(table, np.float32)

    def call(self, ids, training=None):
        return ops.take(ops.convert_to_tensor(self.table), ids[:, 0], axis=0)


def test_classification_document_statistics_give_accuracy_and_macro_f1():
    rng = np.random.default_rng(2)
    docs = _sentences(40, seed=2)
    labels = rng.integers(0, 4, len(docs)).astype(np.int32)  # label 3: unseen in training
    ex = Examples(task="classification", ids=[_encode(VOCAB, d) for d in docs], labels=labels)
    table = rng.normal(size=(len(VOCAB), 3))
    ev = ClassificationEvaluator(ex, ["a", "b", "c"], batch_size=7, unseen_names=["new"])
    model = FixedLogits(table)
    scores, items = ev.score_items(model, VOCAB)
    assert scores == ev(model)
    assert 0 < scores["accuracy"] < 1 and scores["unseen"] > 0
    assert items.score("accuracy") == scores["accuracy"]
    assert items.score("macro_f1") == scores["macro_f1"]
    assert items.stats["macro_f1"].shape == (40, 12)  # 4 labels x (tp, fp, fn)
    np.testing.assert_array_equal(items.stats["macro_f1"].reshape(40, 4, 3).sum((0, 2)) > 0, True)
    names = ["a", "b", "c", "new"]
    assert list(items.keys) == [item_key(evaluation.ClassificationEvaluator.ITEM_KIND, d, names[y]) for d, y in zip(docs, labels)]
    other = Examples(task="classification", ids=[_encode(OTHER, d) for d in docs], labels=labels)
    _, again = ClassificationEvaluator(other, ["a", "b", "c"], 7, unseen_names=["new"]).score_items(model, OTHER)
    np.testing.assert_array_equal(again.keys, items.keys)


# --------------------------------------------------------------------------------------- seq2seq
LETTERS = list(RESERVED_TOKENS) + list("abcdef")


def _reversing(source_vocab, target_vocab):
    """Outputs each source reversed, dropping the last letter when the ids sum to a multiple of 3."""

    def search(source_ids):
        rows = []
        for ids in source_ids.numpy():
            letters = [source_vocab[int(i)] for i in ids if i][::-1]
            if sum(int(i) for i in ids) % 3 == 0:
                letters = letters[:-1]
            rows.append([target_vocab.index(t) for t in letters] + [EOS_ID])
        out = np.zeros((len(rows), max(map(len, rows))), np.int32)
        for k, r in enumerate(rows):
            out[k, : len(r)] = r
        return tf.constant(out)

    return search


def test_seq2seq_source_statistics_give_wer_per_bleu_and_chrf():
    rng = random.Random(6)
    words = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))) for _ in range(40)})
    sources, targets = [], []
    for i, w in enumerate(words):
        sources.append(w)
        targets.append(w[::-1])
        if i % 3 == 0:  # a second reference on the next example
            sources.append(w)
            targets.append(w[::-1][1:] or "a")
    ex = Examples(task="seq2seq", ids=[_encode(LETTERS, s) for s in sources],
                  targets=[_encode(LETTERS, t) for t in targets])
    keras.utils.set_random_seed(5)
    model = Seq2SeqModel(len(LETTERS), len(LETTERS), cell="gru", encoder_layers=1, embedding_dim=4, hidden_dim=4,
                         decoder_dim=8, attention="dot", seed=5)
    model.build()
    ev = Seq2SeqEvaluator(ex, LETTERS, batch_size=5, max_length=9, text_metrics=True, target_level="char")
    ev._search_fn = lambda m: _reversing(LETTERS, LETTERS)
    scores, items = ev.score_items(model, LETTERS)
    assert scores == ev(model)
    assert len(items) == scores["sources"] == len(words) < len(sources)
    assert 0 < scores["wer"] < 1 and 0 < scores["bleu"] < 100
    for name in ("wer", "per", "bleu", "chrf"):
        assert items.score(name) == scores[name], name
    refs = {}
    for s, t in zip(sources, targets):
        refs.setdefault(s, []).append(list(t))
    assert list(items.keys) == [item_key(evaluation.Seq2SeqEvaluator.ITEM_KIND, list(w), refs[w]) for w in words]


# ------------------------------------------------------------------------------------ the tasks
def _config(tmp, name, data, model, **sections):
    return parse_config({"name": name, "data": {**data, "output_dir": str(tmp / "out"), "num_shards": 2},
                         "model": {"cell": "gru", "num_layers": 1, "embedding_dim": 4, "hidden_dim": 4, **model},
                         "training": {"batch_size": 4, "eval_batch_size": 3, "bptt": 4, "jit_compile": False},
                         **sections})


def _corpus(tmp, name, lines):
    path = tmp / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def task_configs(tmp_path_factory):
    rng = random.Random(8)
    split = {"method": "interleave", "period": 10, "valid": 0.3, "test": 0.3}

    def words(k):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, k)))

    out = {}
    tmp = tmp_path_factory.mktemp("lm")
    out["lm"] = _config(tmp, "lm", {"dataset": "text", "files": [_corpus(tmp, "c.txt", [words(9) for _ in range(80)])],
                                    "split": split}, {})
    tmp = tmp_path_factory.mktemp("tagging")
    tags = ["B-X", "I-X", "B-Y", "O", "O"]
    blocks = ["\n".join(f"{w} {rng.choice(tags)}" for w in words(7).split()) for _ in range(80)]
    columns = _corpus(tmp, "t.txt", ["\n\n".join(blocks)])  # a blank line between sentences
    out["tagging"] = _config(tmp, "tagging", {"dataset": "columns", "files": [columns], "tag_scheme": "bio",
                                              "split": split}, {})
    tmp = tmp_path_factory.mktemp("classification")
    docs = [f"{rng.choice(['ham', 'spam', 'eggs'])}\t{words(9)} d{i}" for i in range(80)]
    out["classification"] = _config(tmp, "classification", {"dataset": "tsv", "files": [_corpus(tmp, "d.tsv", docs)],
                                                            "split": split}, {"pooling": "mean"})
    tmp = tmp_path_factory.mktemp("seq2seq")
    pairs = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))) for _ in range(90)})
    reversals = _corpus(tmp, "p.tsv", [f"{w}\t{w[::-1]}" for w in pairs])
    out["seq2seq"] = _config(tmp, "seq2seq", {"dataset": "pairs", "files": [reversals], "level": "char",
                                              "target": {"level": "char", "normalization": "none"}, "split": split},
                             {"decoder_dim": 8, "attention": "dot"},
                             decode={"beam_size": 2, "max_length": 8, "attention_samples": 0})
    return out


@pytest.mark.parametrize("name", ["lm", "tagging", "classification", "seq2seq"])
def test_every_tasks_metrics_are_sums_of_its_item_statistics(task_configs, name):
    config = task_configs[name]
    task = tasks.get(config.data.task)
    data_dir = Path(prepare(config.data))
    data = task.load(config, data_dir, load_manifest(data_dir))
    keras.utils.set_random_seed(0)
    model = task.build_model(config, data)
    task.validator(config, data, types.SimpleNamespace(enabled=False), lambda: 1)
    metrics = task.evaluate(config, data, model)
    items = task.item_stats(config, data, model)
    assert items is data.items and set(items) == {"valid", "test"}
    checked = []
    for metric, value in metrics.items():
        split, stat = metric_split(metric)
        if stat not in items[split].stats:
            assert stat in ("loss", "perplexity", "sources", "tokens", "examples", "unseen") or stat.endswith("_tokens")
            continue
        got = items[split].score(stat)
        assert got == (pytest.approx(value, rel=1e-9) if stat in ("loss", "perplexity", "bpc") else value), metric
        checked.append(metric)
    assert config.tracking.metric in checked  # the promotion metric has its items
    if name == "seq2seq":
        assert {"val_wer", "val_beam2_wer", "val_bleu", "val_beam2_chrf"} <= set(checked)
    for split in ("valid", "test"):
        manifest_split = data.manifest["splits"][split]
        if name in ("lm", "tagging", "classification"):
            assert len(items[split]) == manifest_split["examples"]  # a record is a sentence / document
    if name == "lm":  # the streamed split's sentences are its records
        stream = lm_token_stream(data_dir, "valid")
        layout = TokenStream(data_dir, "valid", config.training.eval_batch_size, config.training.bptt)
        _, memory = StreamEvaluator(bptt_layout(stream, layout.num_streams, layout.bptt),
                                    jit_compile=False).score_items(model, data.vocab.tokens, stream=stream)
        np.testing.assert_array_equal(memory.keys, items["valid"].keys)
        np.testing.assert_allclose(memory.stats["loss"], items["valid"].stats["loss"], rtol=1e-12)
    if name == "seq2seq":
        return  # (decoding every split again is slow; the other tasks check re-scoring)
    # another model: scored again
    keras.utils.set_random_seed(1)
    other = task.build_model(config, data)
    again = task.item_stats(config, data, other)
    assert data.items_model is other
    np.testing.assert_array_equal(again["test"].keys, items["test"].keys)


def test_metric_split_names_the_split_and_statistic():
    assert metric_split("val_wer") == ("valid", "wer")
    assert metric_split("test_beam5_bleu") == ("test", "beam5_bleu")
    with pytest.raises(ValueError, match="names no split"):
        metric_split("wer")


# ------------------------------------------------------------------------------------- the file
def _items():
    return ItemStats(np.array(["k1", "k2", "k1"]),
                     {"accuracy": np.array([[1, 1], [0, 1], [1, 1]]), "beam2_f1": np.arange(9.0).reshape(3, 3)})


def test_save_and_load_round_trip(tmp_path):
    items = _items()
    path = tmp_path / "items"  # no .npz added
    items.save(path)
    assert path.is_file() and not (tmp_path / "items.npz").exists()
    loaded = ItemStats.load(path)
    np.testing.assert_array_equal(loaded.keys, items.keys)
    assert loaded.keys.dtype.kind == "U" and set(loaded.stats) == {"accuracy", "beam2_f1"}
    for name, arr in items.stats.items():
        assert loaded.stats[name].dtype == np.float64
        np.testing.assert_array_equal(loaded.stats[name], arr)
    assert loaded.score("accuracy") == pytest.approx(2 / 3)
    empty = ItemStats(np.array([], str), {"wer": np.zeros((0, 2))})
    empty.save(tmp_path / "empty.npz")
    assert len(ItemStats.load(tmp_path / "empty.npz")) == 0


def _write(path, **members):
    with open(path, "wb") as f:
        np.savez(f, **members)  # np.savez pickles object arrays: what a hostile writer would do
    return path


GOOD = {"format_version": np.array(1), "keys": np.array(["a", "b"]), "stats_accuracy": np.ones((2, 2))}


@pytest.mark.parametrize("change,message", [
    ({"stats_accuracy": np.ones((3, 2))}, r"shape \[2 items, k\]"),
    ({"stats_accuracy": np.ones((2, 3))}, "k=2 statistics"),
    ({"stats_accuracy": np.array([[1, 1], [object(), 1]], dtype=object)}, "without pickles"),
    ({"keys": np.array(["a", {"x": 1}], dtype=object)}, "without pickles"),
    ({"stats_rouge": np.ones((2, 2))}, "unknown score 'rouge'"),
    ({"format_version": np.array(2)}, "format version 2 is not supported"),
    ({"format_version": np.array([1, 1])}, "integer scalar"),
    ({"keys": np.array([1, 2])}, "keys must be a 1-D array of str"),
    ({"stats_accuracy": np.array([[1.0, np.nan], [1, 1]])}, "NaN"),
    ({"stats_accuracy": -np.ones((2, 2))}, "negative"),
    ({"stats_accuracy": np.array([["1", "1"], ["1", "1"]])}, "numeric"),
    ({"extra": np.ones(2)}, r"unexpected members \['extra'\]"),
    ({"keys": None}, "'keys' is missing"),
])
def test_load_refuses_a_tampered_file_and_names_it(tmp_path, change, message):
    members = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = _write(tmp_path / "bad.npz", **members)
    with pytest.raises(ValueError, match=message) as err:
        ItemStats.load(path)
    assert str(path) in str(err.value)


def test_load_refuses_what_is_not_an_archive(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz: not a valid item-statistics file"):
        ItemStats.load(text)
    single = tmp_path / "one.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match="one array"):
        ItemStats.load(single)
    with pytest.raises(ValueError, match="cannot read it"):
        ItemStats.load(tmp_path / "missing.npz")


def test_item_stats_check_what_they_hold():
    with pytest.raises(ValueError, match=r"shape \[2 items, k\]"):
        ItemStats(np.array(["a", "b"]), {"wer": np.ones((3, 2))})
    with pytest.raises(ValueError, match="unknown score"):
        ItemStats(np.array(["a"]), {"nope": np.ones((1, 2))})
    merged = _items().merged(_items().with_prefix("beam4"))
    assert set(merged.stats) == {"accuracy", "beam2_f1", "beam4_accuracy", "beam4_beam2_f1"}
    with pytest.raises(ValueError, match="both hold"):
        _items().merged(_items())
    assert math.isclose(_items().score("beam2_f1"), _items().score("beam2_f1"))
