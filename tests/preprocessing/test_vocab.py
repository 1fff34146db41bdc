import pytest
import tensorflow as tf

from preprocessing.vocab import BOS_ID, EOS_ID, PAD_ID, RESERVED_TOKENS, UNK_ID, Vocabulary


def test_reserved_ids():
    assert RESERVED_TOKENS == ("<pad>", "<unk>", "<bos>", "<eos>")
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    vocab = Vocabulary.from_counts({})
    assert vocab.tokens == list(RESERVED_TOKENS)
    assert vocab.encode(["<pad>", "<unk>", "<bos>", "<eos>"]) == [0, 1, 2, 3]


def test_from_counts_orders_by_count_then_token():
    vocab = Vocabulary.from_counts({"b": 2, "a": 2, "z": 5, "c": 1})
    assert vocab.tokens[4:] == ["z", "a", "b", "c"]
    # same result whatever the input order, and pairs are summed
    again = Vocabulary.from_counts([("c", 1), ("b", 1), ("a", 2), ("z", 5), ("b", 1)])
    assert again == vocab


def test_max_size_counts_reserved_tokens_and_min_count_drops_rare():
    counts = {"a": 5, "b": 4, "c": 3, "d": 1}
    assert Vocabulary.from_counts(counts, max_size=6).tokens[4:] == ["a", "b"]
    assert len(Vocabulary.from_counts(counts, max_size=6)) == 6
    assert Vocabulary.from_counts(counts, min_count=3).tokens[4:] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.from_counts(counts, max_size=3)


def test_reserved_strings_in_corpus_keep_reserved_ids():
    vocab = Vocabulary.from_counts({"<unk>": 100, "the": 3, "<eos>": 7})
    assert vocab.tokens == list(RESERVED_TOKENS) + ["the"]
    assert vocab.encode(["the", "<unk>", "never-seen"]) == [4, UNK_ID, UNK_ID]


def test_encode_decode():
    vocab = Vocabulary(list(RESERVED_TOKENS) + ["a", "b"])
    assert vocab.encode(["a", "b", "c"]) == [4, 5, UNK_ID]
    assert vocab.decode([4, 5, EOS_ID]) == ["a", "b", "<eos>"]
    assert len(vocab) == 6 and "a" in vocab and "c" not in vocab
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([6])


def test_constructor_validates():
    with pytest.raises(ValueError, match="reserved"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(list(RESERVED_TOKENS) + ["a", "a"])
    with pytest.raises(ValueError, match="newline"):
        Vocabulary(list(RESERVED_TOKENS) + ["a\nb"])


def test_save_load_round_trip_with_odd_character_tokens(tmp_path):
    tokens = list(RESERVED_TOKENS) + ["the", " ", "\r", "\u2028", "\x0b", "é", "東"]
    vocab = Vocabulary(tokens)
    path = tmp_path / "vocab" / "tokens.txt"
    vocab.save(path)
    assert path.read_bytes() == ("\n".join(tokens) + "\n").encode("utf-8")
    assert Vocabulary.load(path) == vocab
    assert Vocabulary.load(str(path)).tokens == tokens


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Vocabulary.load(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(ValueError, match="bad.txt"):
        Vocabulary.load(bad)


def test_lookup_table_matches_encode():
    vocab = Vocabulary.from_counts({"a": 3, "b": 2, "c": 1})
    table = vocab.lookup_table()
    tokens = ["a", "b", "c", "zzz", "<unk>", "<eos>", "<pad>"]
    ids = table.lookup(tf.constant(tokens))
    assert ids.dtype == tf.int64
    assert ids.numpy().tolist() == vocab.encode(tokens)

    @tf.function
    def graph(t):
        return vocab.lookup_table().lookup(t)

    assert graph(tf.constant(tokens)).numpy().tolist() == vocab.encode(tokens)
