import pickle

import pytest
import tensorflow as tf

from preprocessing.tokenizers import Tokenizer, TokenizerConfig


def _tok(**kw) -> Tokenizer:
    return Tokenizer(TokenizerConfig(**kw))


def test_nfkc_normalization_maps_compatibility_characters():
    # U+FB01 LATIN SMALL LIGATURE FI, U+FF21 FULLWIDTH A, U+2460 CIRCLED DIGIT ONE
    assert _tok(normalization="NFKC").tokenize_py("\ufb01ne \uff21 \u2460") == ["fine", "A", "1"]
    assert _tok(normalization="none").tokenize_py("\ufb01ne \uff21") == ["\ufb01ne", "\uff21"]


def test_nfc_and_nfd_compose_and_decompose():
    decomposed = "e\u0301"  # e + COMBINING ACUTE
    assert _tok(normalization="NFC").tokenize_py(decomposed) == ["\u00e9"]
    assert _tok(normalization="NFD", level="char").tokenize_py("\u00e9") == ["e", "\u0301"]


def test_case_folding_only_when_asked():
    assert _tok(lowercase=True).tokenize_py("The CAT Straße") == ["the", "cat", "strasse"]
    assert _tok(lowercase=False).tokenize_py("The CAT") == ["The", "CAT"]


def test_whitespace_vs_unicode_script_split():
    text = "hello, world!  東京 <unk>"
    assert _tok(split="whitespace").tokenize_py(text) == ["hello,", "world!", "東京", "<unk>"]
    assert _tok(split="unicode_script").tokenize_py("hello, world 東京") == ["hello", ",", "world", "東京"]


def test_whitespace_split_handles_tabs_and_unicode_spaces():
    assert _tok().tokenize_py("a\tb\u3000c  ") == ["a", "b", "c"]


def test_char_level_keeps_spaces_and_splits_code_points():
    assert _tok(level="char").tokenize_py("ab c") == ["a", "b", " ", "c"]
    assert _tok(level="char").tokenize_py("né 東") == ["n", "é", " ", "東"]
    assert _tok(level="char", lowercase=True).tokenize_py("A B") == ["a", " ", "b"]
    assert _tok(level="char").tokenize_py("") == []


def test_tokenize_returns_ragged_and_matches_tokenize_py():
    tok = _tok(lowercase=True)
    texts = ["The cat", "", "a b c"]
    out = tok.tokenize(tf.constant(texts))
    assert isinstance(out, tf.RaggedTensor)
    assert [[t.decode() for t in row] for row in out.to_list()] == [tok.tokenize_py(t) for t in texts]
    assert tok.tokenize_batch_py(texts) == [["the", "cat"], [], ["a", "b", "c"]]
    assert tok.tokenize_batch_py([]) == []


@pytest.mark.parametrize("level,split", [("word", "whitespace"), ("word", "unicode_script"), ("char", "whitespace")])
def test_graph_mode_inside_tf_function_and_tf_data(level, split):
    tok = _tok(level=level, split=split, lowercase=True)
    texts = ["Hello, World", "x  y"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(t):
        return tok.tokenize(t)

    graph = run(tf.constant(texts)).to_list()
    eager = tok.tokenize(tf.constant(texts)).to_list()
    assert graph == eager
    if split == "whitespace":  # tracing the unicode_script tokenizer takes seconds; once is enough
        ds = tf.data.Dataset.from_tensor_slices(texts).batch(2).map(tok.tokenize)
        assert next(iter(ds)).to_list() == eager


def test_tokenize_rejects_wrong_rank():
    with pytest.raises(ValueError, match="1-D"):
        _tok().tokenize(tf.constant([["a"]]))


def test_config_round_trip_and_validation():
    cfg = TokenizerConfig(level="char", split="unicode_script", normalization="NFC", lowercase=True)
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg
    assert Tokenizer(cfg.to_dict()).config == cfg
    with pytest.raises(ValueError, match="level"):
        TokenizerConfig(level="byte")
    with pytest.raises(ValueError, match="normalization"):
        TokenizerConfig(normalization="nfkc")
    with pytest.raises(ValueError, match="unknown key"):
        TokenizerConfig.from_dict({"levl": "word"})


def test_tokenizer_pickles_without_tf_state():
    tok = _tok(split="unicode_script")
    tok.tokenize_py("warm, up")  # builds TF objects
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.config == tok.config
    assert clone.tokenize_py("a, b") == ["a", ",", "b"]


def test_detokenize_joins_words_with_spaces_and_characters_without():
    from preprocessing.tokenizers import detokenize, joiner

    assert detokenize(["the", "cat"], "word") == "the cat"
    assert detokenize(list("ab c"), "char") == "ab c"
    assert Tokenizer(TokenizerConfig(level="char")).detokenize(["a", "b"]) == "ab"
    assert joiner("word") == " " and joiner("char") == ""
    with pytest.raises(ValueError, match="level"):
        joiner("byte")
