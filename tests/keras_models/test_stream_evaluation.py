"""The evaluators read a split streamed from its shards and keep sums, not items, with the figures of
scoring the split in memory: the same counts, accuracy, span / macro F1, confusion matrices, WER, PER,
BLEU and chrF, and losses equal up to float summation order (batches are composed differently).

The references (``_old_*``) are the evaluators as they were before streaming, over the whole split in
memory: every item's gold and prediction collected, then scored at once (seqeval, scikit-learn,
sacrebleu). The prepared splits have several shards and, for the labelled tasks, labels unseen in
training; evaluation windows are small (``eval_window``), so a split spans many windows.
"""

import random
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.evaluation import (
    ClassificationEvaluator,
    Seq2SeqEvaluator,
    TaggingEvaluator,
    TextStatistics,
    sequence_error_rates,
    span_counts,
    span_report,
    span_scores,
    text_scores,
)
from keras_models.models.classifier import RNNClassifier
from keras_models.models.seq2seq import Seq2SeqModel
from keras_models.models.tagger import RNNTagger
from pipelines.config import DataConfig
from pipelines.prepare import prepare
from preprocessing.input_fns import eval_batches, load_examples
from preprocessing.manifest import load_manifest
from preprocessing.streams import ExampleStream
from preprocessing.vocab import EOS_ID, LabelSet, Vocabulary

BATCH, WINDOW = 5, 2  # 10 examples sorted at a time
INTERLEAVE = {"method": "interleave", "period": 10, "valid": 0.3, "test": 0.3}  # slots 0-3 train, 4-6 valid, 7-9 test
WORDS = "the cat sat on a mat dog and end big small red".split()


def _close(a, b):
    assert a == pytest.approx(b, rel=1e-6, abs=1e-12)


# --------------------------------------------------------------------------------- prepared data
@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """BIOES-shaped random tags of two types; eval sentences with ``i % 7 == 0`` hold an S-NEW span,
    a type no training sentence has."""
    rng = random.Random(11)
    root = tmp_path_factory.mktemp("tagged")
    tags = [f"{p}-{t}" for p in "BIES" for t in ("PER", "LOC")] + ["O", "O", "O"]
    blocks = []
    for i in range(400):
        rows = [(rng.choice(WORDS), rng.choice(tags)) for _ in range(rng.randint(1, 12))]
        if i % 10 >= 4 and i % 7 == 0:
            rows[rng.randrange(len(rows))] = ("zzz", "S-NEW")
        blocks.append("\n".join(f"{w} {t}" for w, t in rows))
    (root / "t.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    data_dir = Path(prepare(DataConfig(dataset="columns", files=[str(root / "t.txt")], output_dir=str(root / "out"),
                                       num_shards=3, char_features=True, split=INTERLEAVE)))
    manifest = load_manifest(data_dir)
    assert manifest["splits"]["test"]["unseen"]["examples"] > 0
    return data_dir, manifest


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    rng = random.Random(12)
    root = tmp_path_factory.mktemp("docs")
    lines = []
    for i in range(300):
        label = "rare" if i % 10 >= 4 and i % 9 == 0 else rng.choice(["ham", "spam", "eggs"])
        lines.append(f"{label}\t" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 15))) + f" d{i}")
    (root / "d.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data_dir = Path(prepare(DataConfig(dataset="tsv", files=[str(root / "d.tsv")], output_dir=str(root / "out"),
                                       num_shards=3, dedupe=False, split=INTERLEAVE)))
    manifest = load_manifest(data_dir)
    assert manifest["splits"]["test"]["unseen"]["examples"] > 0
    return data_dir, manifest


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Letter words → their reversal (characters); every third word has a second, different
    reference on the next line, as the ``cmudict`` reader gives alternate pronunciations."""
    rng = random.Random(13)
    root = tmp_path_factory.mktemp("pairs")
    words = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(2, 7))) for _ in range(260)})
    lines = []
    for i, w in enumerate(words):
        lines.append(f"{w}\t{w[::-1]}")
        if i % 3 == 0:
            lines.append(f"{w}\t{w[::-1][1:] or 'a'}")
    (root / "p.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data_dir = Path(prepare(DataConfig(dataset="pairs", files=[str(root / "p.tsv")], output_dir=str(root / "out"),
                                       level="char", num_shards=3, target={"level": "char", "normalization": "none"},
                                       split={"valid": 0.3, "test": 0.3, "seed": 1})))
    return data_dir, load_manifest(data_dir)


def _splits(data_dir, split, with_chars=False):
    memory = load_examples(data_dir, split, with_chars)
    stream = ExampleStream(data_dir, split, with_chars, eval_window=WINDOW)
    assert len(stream.paths) > 1 and len(stream) == len(memory) > 4 * BATCH * WINDOW
    return memory, stream


def _names(manifest, key):
    names = LabelSet.load(manifest.file(key)).labels
    unseen = LabelSet.load(manifest.file("unseen_labels")).labels
    return names, unseen


# ----------------------------------------------------------------------------- old references
def _old_tagging(ev, model):
    """TaggingEvaluator before streaming: every sentence's gold / predicted tags, scored at once."""
    from sklearn.metrics import confusion_matrix

    ex, fn = ev.examples, ev.fn(model)
    names = np.array(ev.tag_names + ev.unseen_names, dtype=object)
    gold, pred = [None] * len(ex), [None] * len(ex)
    total = scored = 0.0
    for indices, batch in eval_batches(ex, ev.batch_size, ev.max_chars):
        loss_sum, count, tags = fn({k: tf.constant(v) for k, v in batch.items()})
        total += float(loss_sum)
        scored += float(count)
        for row, i in enumerate(indices):
            gold[i] = names[ex.tags[i]].tolist()
            pred[i] = names[tags.numpy()[row, : len(ex.ids[i])]].tolist()
    known = len(ev.tag_names)
    tokens = sum(len(g) for g in gold)
    unseen_ids = [t[t >= known] for t in ex.tags]
    unseen = int(sum(len(u) for u in unseen_ids))
    correct = sum(a == b and int(k) < known for g, p, ids in zip(gold, pred, ex.tags) for a, b, k in zip(g, p, ids))
    out = {"loss": total / max(tokens if not unseen else scored, 1), "accuracy": correct / max(tokens, 1),
           "tokens": tokens}
    report = {}
    if ev.scheme != "plain":
        spans = span_scores(gold, pred, ev.scheme)
        out.update(precision=spans["precision"], recall=spans["recall"], f1=spans["f1"])
        report["per_type"] = spans["per_type"]
    if ev.unseen_names or unseen:
        out["unseen"] = unseen
        counts = np.bincount(np.concatenate(unseen_ids) - known, minlength=len(ev.unseen_names))
        report["unseen"] = {name: int(c) for name, c in zip(ev.unseen_names, counts)}
    index = {name: i for i, name in enumerate(names)}
    matrix = confusion_matrix([index[t] for g in gold for t in g], [index[t] for p in pred for t in p],
                              labels=range(len(names)))
    return out, report, matrix


def _old_classification(ev, model):
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    ex, fn = ev.examples, ev.fn(model)
    pred = np.zeros(len(ex), np.int32)
    total = scored = 0.0
    for indices, batch in eval_batches(ex, ev.batch_size):
        loss_sum, count, p = fn({k: tf.constant(v) for k, v in batch.items()})
        total, scored = total + float(loss_sum), scored + float(count)
        pred[np.asarray(indices)] = p.numpy()
    gold, known = ex.labels, len(ev.label_names)
    unseen_mask = gold >= known
    unseen = int(unseen_mask.sum())
    labels = list(range(len(ev.confusion_labels)))
    matrix = confusion_matrix(gold, pred, labels=labels)
    report = classification_report(gold, pred, labels=labels, target_names=ev.confusion_labels, output_dict=True,
                                   zero_division=0)
    out = {"loss": total / max(len(gold) if not unseen else scored, 1),
           "accuracy": float(np.mean((gold == pred) & ~unseen_mask)),
           "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
           "examples": len(gold)}
    if ev.unseen_names or unseen:
        out["unseen"] = unseen
        counts = np.bincount(gold[unseen_mask] - known, minlength=len(ev.unseen_names))
        report["unseen"] = {name: int(c) for name, c in zip(ev.unseen_names, counts)}
    return out, report, matrix


def _old_seq2seq(ev, model):
    """Seq2SeqEvaluator before streaming: the split's distinct sources with all their references,
    decoded together, then scored at once."""
    import math

    ex, fn = ev.examples, ev.fn(model)
    groups = {}
    for i, ids in enumerate(ex.ids):
        groups.setdefault(tuple(int(x) for x in ids), []).append(i)
    sources = list(groups)
    references = [[ev._tokens(ex.targets[i]) for i in members] for members in groups.values()]
    total = count = 0.0
    for _, batch in eval_batches(ex, ev.batch_size):
        loss_sum, n, _ = fn({k: tf.constant(v) for k, v in batch.items()})
        total, count = total + float(loss_sum), count + float(n)
    loss = total / max(count, 1.0)
    hypotheses = ev.decode(model, sources)
    out = {"loss": loss, "perplexity": float(math.exp(min(loss, 700.0))),
           **sequence_error_rates(hypotheses, references), "sources": len(sources)}
    if ev.text_metrics:
        out.update(text_scores(hypotheses, references, "" if ev.target_level == "char" else " "))
    return out


def _same_scores(got, want):
    assert list(got) == list(want)
    for key, value in want.items():
        if key in ("loss", "perplexity"):
            _close(got[key], value)
        else:
            assert got[key] == value, key  # counts and rates: identical


# ------------------------------------------------------------------------------------- tagging
@pytest.mark.parametrize("scheme,crf,max_chars", [("bio", False, None), ("bioes", True, 3), ("plain", False, 4)])
def test_tagging_stream_scores_equal_the_in_memory_split(tagged, scheme, crf, max_chars):
    data_dir, manifest = tagged
    names, unseen = _names(manifest, "labels")
    assert unseen == ["S-NEW"]
    chars = max_chars is not None
    char_vocab = len(Vocabulary.load(manifest.file("chars"))) if chars else 0
    keras.utils.set_random_seed(3)
    model = RNNTagger(len(Vocabulary.load(manifest.file("vocab"))), len(names), cell="gru", embedding_dim=4,
                      hidden_dim=4, use_crf=crf, char_vocab_size=char_vocab, char_embedding_dim=3, char_hidden_dim=2,
                      seed=3)
    model.build({"ids": (None, None), "chars": (None, None, None)} if chars else (None, None))
    for split in ("valid", "test"):
        memory, stream = _splits(data_dir, split, with_chars=chars)
        args = dict(scheme=scheme, batch_size=BATCH, max_chars=max_chars, unseen_names=unseen)
        in_memory, streamed = TaggingEvaluator(memory, names, **args), TaggingEvaluator(stream, names, **args)
        want, report, matrix = _old_tagging(in_memory, model)
        assert want["unseen"] > 0 and 0 < want["accuracy"] < 1
        if scheme != "plain":
            assert 0 < want["f1"] < 1 and "NEW" in report["per_type"]
        for ev in (in_memory, streamed):
            _same_scores(ev(model), want)
            assert ev.last_report == report
            np.testing.assert_array_equal(ev.confusion, matrix)
            assert ev.confusion_labels == names + unseen
        assert in_memory(model)["loss"] == want["loss"]  # the same batches in memory: bit-identical
        gold, pred, _ = streamed.predict(model)
        assert (gold, pred) == in_memory.predict(model)[:2]  # every sentence in its corpus place


def test_span_counts_summed_over_parts_give_seqeval_scores():
    rng = np.random.default_rng(0)
    tags = ["B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "O", "O"]
    gold = [[str(t) for t in rng.choice(tags, rng.integers(1, 9))] for _ in range(300)]
    pred = [[str(rng.choice(tags)) if rng.random() < 0.5 else t for t in g] for g in gold]
    for scheme in ("bio", "bioes"):
        summed = {}
        for start in range(0, len(gold), 7):
            for name, c in span_counts(gold[start : start + 7], pred[start : start + 7], scheme).items():
                summed[name] = summed.get(name, 0) + c
        assert span_report(summed) == span_scores(gold, pred, scheme)
    with warnings.catch_warnings():  # seqeval's macro average of no span type warns
        warnings.simplefilter("ignore", RuntimeWarning)
        assert span_report({}) == span_scores([["O"]], [["O"]], "bio")


def test_a_gold_tag_id_out_of_range_is_named_while_streaming(tagged):
    data_dir, manifest = tagged
    names, _ = _names(manifest, "labels")
    keras.utils.set_random_seed(3)
    model = RNNTagger(len(Vocabulary.load(manifest.file("vocab"))), len(names), cell="gru", embedding_dim=4,
                      hidden_dim=4, seed=3)
    model.build((None, None))
    stream = ExampleStream(data_dir, "test", eval_window=WINDOW)
    with pytest.raises(ValueError, match=r"sentence \d+: gold tag id \d+ is out of range"):
        TaggingEvaluator(stream, names, batch_size=BATCH)(model)  # the S-NEW tags have no name here


# ------------------------------------------------------------------------------- classification
def test_classification_stream_scores_equal_the_in_memory_split(documents):
    data_dir, manifest = documents
    names, unseen = _names(manifest, "labels")
    assert unseen == ["rare"]
    keras.utils.set_random_seed(4)
    model = RNNClassifier(len(Vocabulary.load(manifest.file("vocab"))), len(names), cell="gru", embedding_dim=4,
                          hidden_dim=4, pooling="mean", seed=4)
    model.build((None, None))
    for split in ("valid", "test"):
        memory, stream = _splits(data_dir, split)
        in_memory = ClassificationEvaluator(memory, names, batch_size=BATCH, unseen_names=unseen)
        streamed = ClassificationEvaluator(stream, names, batch_size=BATCH, unseen_names=unseen)
        want, report, matrix = _old_classification(in_memory, model)
        assert want["unseen"] > 0 and 0 < want["accuracy"] < 1
        for ev in (in_memory, streamed):
            _same_scores(ev(model), want)
            assert ev.last_report == report
            np.testing.assert_array_equal(ev.confusion, matrix)
        assert in_memory(model)["loss"] == want["loss"]
        np.testing.assert_array_equal(streamed.predict(model)[0], in_memory.predict(model)[0])


# ------------------------------------------------------------------------------------- seq2seq
def _seq2seq(manifest):
    keras.utils.set_random_seed(5)
    model = Seq2SeqModel(len(Vocabulary.load(manifest.file("vocab"))),
                         len(Vocabulary.load(manifest.file("target_vocab"))), cell="gru", encoder_layers=1,
                         embedding_dim=4, hidden_dim=4, decoder_dim=8, attention="dot", seed=5)
    model.build()
    return model


def _reversing_search(manifest):
    """A search that outputs each source reversed, except for every third source (by its first
    ids) where it drops the last letter: right, wrong and alternate-matching outputs."""
    source = Vocabulary.load(manifest.file("vocab"))
    target = Vocabulary.load(manifest.file("target_vocab"))

    def search(source_ids):
        rows = []
        for ids in source_ids.numpy():
            letters = source.decode(int(i) for i in ids if i)[::-1]
            if sum(int(i) for i in ids) % 3 == 0:
                letters = letters[:-1]
            rows.append(target.encode(letters) + [EOS_ID])
        out = np.zeros((len(rows), max(map(len, rows))), np.int32)
        for k, r in enumerate(rows):
            out[k, : len(r)] = r
        return tf.constant(out)

    return search


@pytest.mark.parametrize("search", ["reversing", "beam2"])
def test_seq2seq_stream_scores_equal_the_in_memory_split(pairs, search):
    data_dir, manifest = pairs
    model = _seq2seq(manifest)
    target_vocab = Vocabulary.load(manifest.file("target_vocab")).tokens
    for split in ("valid", "test"):
        memory, stream = _splits(data_dir, split)
        evaluators = [Seq2SeqEvaluator(data, target_vocab, batch_size=BATCH, beam_size=2 if search == "beam2" else 1,
                                       max_length=9, text_metrics=True, target_level="char")
                      for data in (memory, stream)]
        if search == "reversing":
            for ev in evaluators:
                ev._search_fn = lambda model: _reversing_search(manifest)
        want = _old_seq2seq(evaluators[0], model)
        assert want["sources"] < len(memory)  # alternates: fewer sources than examples
        if search == "reversing":
            assert 0 < want["wer"] < 1 and 0 < want["bleu"] < 100
        for ev in evaluators:
            _same_scores(ev(model), want)
        streamed = evaluators[1]
        assert 0 < streamed.most_waiting <= BATCH * WINDOW  # what waits for its corpus turn: one window
        first = [tuple(int(x) for x in memory.ids[0])]
        assert streamed.sample_sources(1) == first == evaluators[0].sample_sources(1)
        assert len(streamed.sample_sources(3)) == 3


def test_text_statistics_summed_over_blocks_give_corpus_bleu_and_chrf():
    rng = random.Random(1)
    words = "a b c d e f g".split()
    refs = [[[rng.choice(words) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 3))]
            for _ in range(120)]
    hyps = [r[0][: rng.randint(0, len(r[0]))] + [rng.choice(words)] for r in refs]
    for joiner in (" ", ""):
        stats = TextStatistics(joiner, block=7)
        for h, r in zip(hyps, refs):
            stats.add(h, r)
        assert stats.scores() == text_scores(hyps, refs, joiner)
