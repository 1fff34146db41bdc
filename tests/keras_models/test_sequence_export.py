"""SequenceTaggerExport and TextClassifierExport: raw strings in, tokens/tags or label/probabilities
out, matching the wrapped model on hand-made ids (and characters), and surviving save / load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.models.classifier import RNNClassifier
from keras_models.export import SequenceTaggerExport, TextClassifierExport, TextToIds
from keras_models.models.tagger import RNNTagger
from preprocessing.tokenizers import Tokenizer, TokenizerConfig
from preprocessing.vocab import UNK_ID, Vocabulary

VOCAB = Vocabulary(["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog", ",", "."])
CHARS = Vocabulary(["<pad>", "<unk>", "<bos>", "<eos>", *"thecasonmdg,."])
TAGS = ["DET", "NOUN", "VERB", "ADP", "PUNCT"]
LABELS = ["business", "sport", "tech"]
TOKENIZER = TokenizerConfig(level="word", split="unicode_script", lowercase=True)
MAX_CHARS = 3  # shorter than "cat" / "the": the truncation matters
TEXTS = [
    "The cat sat on the mat.",
    "a DOG, a cat",
    "zebra",  # one unknown word (and unknown characters)
    "the catalogue of the dogs sat on a mat , the end",  # longer than the others, with unknowns
]


def _randomize(model, seed=3):
    """Big random embeddings and output weights (and CRF transitions) so that the argmax differs from token to token."""
    rng = np.random.default_rng(seed)
    model.embedding.embeddings.assign(rng.normal(scale=1.0, size=model.embedding.embeddings.shape).astype("float32"))
    model.output_layer.kernel.assign(rng.normal(scale=5.0, size=model.output_layer.kernel.shape).astype("float32"))
    crf = getattr(model, "crf", None)
    if crf is not None:
        for w in (crf.transitions, crf.start_transitions, crf.end_transitions):
            w.assign(rng.normal(scale=2.0, size=w.shape).astype("float32"))


def _tagger(with_chars, use_crf):
    model = RNNTagger(len(VOCAB), len(TAGS), cell="lstm", embedding_dim=4, hidden_dim=4, use_crf=use_crf,
                      char_vocab_size=len(CHARS) if with_chars else 0, char_embedding_dim=3, char_hidden_dim=3,
                      seed=5)
    model.build({"ids": (None, None), "chars": (None, None, None)} if with_chars else (None, None))
    _randomize(model)
    text_to_ids = TextToIds(TOKENIZER.to_dict(), VOCAB.tokens, append_eos=False)
    return SequenceTaggerExport(text_to_ids, model, TAGS, CHARS.tokens if with_chars else None, MAX_CHARS)


def _classifier(pooling="max"):
    model = RNNClassifier(len(VOCAB), len(LABELS), cell="gru", embedding_dim=4, hidden_dim=4, pooling=pooling,
                          mlp_dims=[5], seed=5)
    model.build((None, None))
    _randomize(model)
    return TextClassifierExport(TextToIds(TOKENIZER.to_dict(), VOCAB.tokens, append_eos=False), model, LABELS)


def _tokens(text):
    return Tokenizer(TOKENIZER).tokenize_py(text)


def _hand_inputs(texts, with_chars, max_chars=MAX_CHARS):
    """Right-padded ids [B, T] (and chars [B, T, max_chars], as the training batches pad them) by hand."""
    token_lists = [_tokens(t) for t in texts]
    width = max(1, max(len(t) for t in token_lists))
    ids = np.zeros((len(texts), width), np.int32)
    chars = np.zeros((len(texts), width, max_chars), np.int32)
    for b, tokens in enumerate(token_lists):
        ids[b, : len(tokens)] = VOCAB.encode(tokens)
        for j, token in enumerate(tokens):
            c = CHARS.encode(token)[:max_chars]
            chars[b, j, : len(c)] = c
    return token_lists, ({"ids": ids, "chars": chars} if with_chars else ids)


def _strings(x):
    return [[s.decode("utf-8") for s in row] for row in np.asarray(x)]


@pytest.mark.parametrize("with_chars, use_crf", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["plain", "chars", "crf", "chars+crf"])
def test_tagger_export_matches_predict_tags_on_hand_made_ids(with_chars, use_crf):
    export = _tagger(with_chars, use_crf)
    out = export(tf.constant(TEXTS))
    assert set(out) == {"tokens", "tags", "length"}
    token_lists, inputs = _hand_inputs(TEXTS, with_chars)
    assert token_lists[0] == ["the", "cat", "sat", "on", "the", "mat", "."]  # unicode_script split, lowercased
    assert UNK_ID in np.asarray(inputs["ids"] if with_chars else inputs)  # unknown words are in the test

    lengths = out["length"].numpy()
    assert out["length"].dtype == tf.int32
    assert lengths.tolist() == [len(t) for t in token_lists]
    tokens, tags = _strings(out["tokens"]), _strings(out["tags"])
    width = max(lengths)
    assert np.asarray(out["tokens"]).shape == (len(TEXTS), width) == np.asarray(out["tags"]).shape

    expected_ids = np.asarray(export.tagger.predict_tags(inputs))
    for b, n in enumerate(lengths):
        assert tokens[b][:n] == token_lists[b]
        assert tags[b][:n] == [TAGS[i] for i in expected_ids[b, :n]]
        assert tokens[b][n:] == [""] * (width - n) and tags[b][n:] == [""] * (width - n)
    # The randomized output layer makes the tags vary; a constant tagging would prove little.
    assert len({t for row, n in zip(tags, lengths) for t in row[:n]}) > 1


def test_tagger_export_char_truncation_matters():
    """The export cuts every token to ``max_chars`` characters, like training: a tagger exported with
    a wider ``max_chars`` tags (some) long words differently, and matches hand-made chars of that width."""
    short = _tagger(with_chars=True, use_crf=False)
    wide = SequenceTaggerExport(short.text_to_ids, short.tagger, TAGS, CHARS.tokens, max_chars=10)
    _, inputs = _hand_inputs(TEXTS, True, max_chars=10)
    expected = np.asarray(short.tagger.predict_tags(inputs))
    out = wide(tf.constant(TEXTS))
    for b, n in enumerate(out["length"].numpy()):
        assert _strings(out["tags"])[b][:n] == [TAGS[i] for i in expected[b, :n]]
    logits_short = short.tagger(_hand_inputs(TEXTS, True, MAX_CHARS)[1])
    logits_wide = short.tagger(inputs)
    assert not np.allclose(logits_short, logits_wide)  # the cut changes the character features


@pytest.mark.parametrize("with_chars, use_crf", [(False, False), (True, True)], ids=["plain", "chars+crf"])
def test_tagger_export_takes_empty_and_unknown_only_strings(with_chars, use_crf):
    export = _tagger(with_chars, use_crf)
    out = export(tf.constant([""]))
    assert out["length"].numpy().tolist() == [0]
    assert np.asarray(out["tags"]).shape[0] == 1 and all(t == b"" for t in np.asarray(out["tags"]).ravel())
    assert all(t == b"" for t in np.asarray(out["tokens"]).ravel())

    # In a batch with real sentences, the empty one changes nothing for them.
    mixed = export(tf.constant(["", TEXTS[0], "   "]))
    alone = export(tf.constant([TEXTS[0]]))
    assert mixed["length"].numpy().tolist() == [0, 7, 0]
    assert _strings(mixed["tags"])[1][:7] == _strings(alone["tags"])[0][:7]

    unknown = export(tf.constant(["zzz qqq"]))  # every token unknown: tagged all the same, not dropped
    assert unknown["length"].numpy().tolist() == [2]
    assert all(t in TAGS for t in _strings(unknown["tags"])[0][:2])


@pytest.mark.parametrize("with_chars, use_crf", [(False, False), (True, True)], ids=["plain", "chars+crf"])
def test_tagger_export_save_load_round_trip(tmp_path, with_chars, use_crf):
    export = _tagger(with_chars, use_crf)
    texts = tf.constant(TEXTS + [""])
    before = export(texts)
    path = tmp_path / "tagger.keras"
    export.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SequenceTaggerExport)
    assert loaded.tag_names == TAGS and loaded.max_chars == MAX_CHARS
    assert loaded.char_vocabulary == (CHARS.tokens if with_chars else None)
    assert loaded.text_to_ids.vocabulary == VOCAB.tokens and loaded.text_to_ids.append_eos is False
    assert loaded.tagger.use_crf == use_crf
    after = loaded(texts)
    for key in ("tokens", "tags", "length"):
        np.testing.assert_array_equal(np.asarray(after[key]), np.asarray(before[key]))
    np.testing.assert_array_equal(loaded.tagger(_hand_inputs(TEXTS, with_chars)[1]),
                                  export.tagger(_hand_inputs(TEXTS, with_chars)[1]))


def test_tagger_export_rejects_a_bad_char_vocabulary():
    export = _tagger(True, False)
    with pytest.raises(ValueError, match="character vocabulary must start with"):
        SequenceTaggerExport(export.text_to_ids, export.tagger, TAGS, ["a", "b", "c", "d"], MAX_CHARS)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_classifier_export_matches_the_classifier(pooling):
    export = _classifier(pooling)
    out = export(tf.constant(TEXTS))
    assert set(out) == {"label", "probabilities"}
    probs = out["probabilities"].numpy()
    assert probs.shape == (len(TEXTS), len(LABELS)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()
    labels = [s.decode() for s in out["label"].numpy()]
    assert labels == [LABELS[i] for i in probs.argmax(axis=1)]

    _, ids = _hand_inputs(TEXTS, with_chars=False)
    expected = tf.nn.softmax(export.classifier(ids), axis=-1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    # Each text alone gives what it gets in the padded batch.
    for b, text in enumerate(TEXTS):
        np.testing.assert_allclose(export(tf.constant([text]))["probabilities"].numpy()[0], probs[b],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_classifier_export_takes_an_empty_string(pooling):
    export = _classifier(pooling)
    out = export(tf.constant(["", "   "]))
    probs = out["probabilities"].numpy()
    assert probs.shape == (2, len(LABELS))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert [s.decode() for s in out["label"].numpy()] == [LABELS[i] for i in probs.argmax(axis=1)]
    # With real texts in the batch, the empty one changes nothing for them.
    mixed = export(tf.constant(["", TEXTS[0]]))["probabilities"].numpy()
    np.testing.assert_allclose(mixed[1], export(tf.constant([TEXTS[0]]))["probabilities"].numpy()[0],
                               rtol=1e-5, atol=1e-6)


def test_classifier_export_save_load_round_trip(tmp_path):
    export = _classifier()
    texts = tf.constant(TEXTS + [""])
    before = export(texts)
    path = tmp_path / "classifier.keras"
    export.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TextClassifierExport)
    assert loaded.label_names == LABELS and loaded.text_to_ids.vocabulary == VOCAB.tokens
    after = loaded(texts)
    np.testing.assert_array_equal(after["label"].numpy(), before["label"].numpy())
    np.testing.assert_array_equal(after["probabilities"].numpy(), before["probabilities"].numpy())
