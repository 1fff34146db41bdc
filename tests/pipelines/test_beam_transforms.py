"""Each Beam transform of the prepare job on its own, with TestPipeline / assert_that / equal_to."""

import collections
import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import beam_transforms as bt
from pipelines.datasets import text_sources
from preprocessing import schema
from preprocessing.tokenizers import TokenizerConfig
from preprocessing.vocab import EOS_ID, UNK_ID, Vocabulary


def _pipeline():
    # FnApiRunner in-process: DirectRunner would first try to download the Prism runner.
    return test_pipeline.TestPipeline(runner=bt.local_runner())


def _rec(index, split, raw, source="s.txt"):
    return {"index": (0, index), "split": split, "source": source, "line": index, "raw": raw}


def _tok(index, split, tokens):
    return {"index": (0, index), "split": split, "source": "s.txt", "line": index, "tokens": tokens}


def test_hash_split_is_pinned_and_proportional():
    # Pinned: the split of a line must never change between versions, runs or machines (sha256 of
    # "seed, source, line"; no Python hash()).
    code = {"train": ".", "valid": "v", "test": "t"}
    got = "".join(code[bt.hash_split("corpus.txt", i, 0.3, 0.3, seed=0)] for i in range(1, 31))
    assert got == "t.tttv..vttt.vvvt.v.tv...vttv."
    assert bt.hash_split("corpus.txt", 1, 0.0, 0.0) == "train"
    counts = collections.Counter(bt.hash_split("f", i, 0.1, 0.2, seed=3) for i in range(20000))
    assert abs(counts["valid"] / 20000 - 0.1) < 0.01
    assert abs(counts["test"] / 20000 - 0.2) < 0.01
    other_seed = [bt.hash_split("f", i, 0.1, 0.2, seed=4) for i in range(200)]
    assert other_seed != [bt.hash_split("f", i, 0.1, 0.2, seed=3) for i in range(200)]


def test_read_corpus_reads_in_workers_with_positions(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"one\r\ntwo\n")
    b.write_bytes(b"\xef\xbb\xbfthree\n\xff\n")
    sources = text_sources([str(a), str(b)])
    expected = [
        {"index": (0, 1), "split": None, "source": str(a), "line": 1, "item": 0, "raw": b"one"},
        {"index": (0, 2), "split": None, "source": str(a), "line": 2, "item": 1, "raw": b"two"},
        {"index": (1, 1), "split": None, "source": str(b), "line": 1, "item": 0, "raw": b"three"},
        {"index": (1, 2), "split": None, "source": str(b), "line": 2, "item": 1, "raw": b"\xff"},
    ]
    with _pipeline() as p:
        assert_that(p | bt.ReadCorpus(sources), equal_to(expected))


def test_read_corpus_fails_if_a_source_changed(tmp_path):
    a = tmp_path / "a.txt"
    a.write_bytes(b"one\n")
    with pytest.raises(Exception, match="changed while"):
        with _pipeline() as p:
            _ = p | bt.ReadCorpus(text_sources([str(a)]), {str(a): "0" * 64}, reshuffle=False)


def test_assign_split_keeps_own_splits_and_hashes_the_rest():
    records = [_rec(1, None, b"a"), _rec(2, "valid", b"b"), _rec(3, None, b"c")]
    expected = [
        dict(records[0], split=bt.hash_split("s.txt", 1, 0.3, 0.3, 7)),
        records[1],
        dict(records[2], split=bt.hash_split("s.txt", 3, 0.3, 0.3, 7)),
    ]
    with _pipeline() as p:
        assert_that(p | beam.Create(records) | bt.AssignSplit(0.3, 0.3, seed=7), equal_to(expected))


def test_take_first_per_split_keeps_corpus_order_prefix():
    records = [_rec(i, "train" if i % 3 else "test", b"x") for i in range(1, 13)]
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    with _pipeline() as p:
        out = p | beam.Create(list(reversed(records))) | bt.TakeFirstPerSplit({"train": 3, "valid": 5})
        assert_that(out, equal_to(train[:3] + test))


def test_tokenize_lines_accepts_and_rejects_with_reasons():
    records = [
        _rec(1, "train", "The  cat".encode()),
        _rec(2, "train", b"bad \xff byte"),
        _rec(3, "train", b""),
        _rec(4, "valid", b"   \t "),
        _rec(5, "test", b"one two three four"),
        _rec(6, "test", "\ufb01ne".encode()),  # NFKC: the fi ligature becomes "fi"
    ]
    with _pipeline() as p:
        out = p | beam.Create(records) | bt.TokenizeLines(TokenizerConfig(lowercase=True), max_length=3)
        assert_that(out.accepted, equal_to([_tok(1, "train", ["the", "cat"]), _tok(6, "test", ["fine"])]), label="ok")
        reasons = out.rejected | beam.Map(lambda r: (r["line"], r["reason"], r["text"]))
        assert_that(
            reasons,
            equal_to(
                [
                    (2, "invalid_utf8", "bad \\xff byte"),
                    (3, "empty", ""),
                    (4, "empty", "   \t "),
                    (5, "too_long", "one two three four"),
                ]
            ),
            label="rejected",
        )


def test_tokenize_lines_char_level_keeps_spaces_and_rejects_blank_lines():
    records = [_rec(1, "train", b"a b"), _rec(2, "train", b"   ")]
    with _pipeline() as p:
        out = p | beam.Create(records) | bt.TokenizeLines(TokenizerConfig(level="char"), max_length=10)
        assert_that(out.accepted, equal_to([_tok(1, "train", ["a", " ", "b"])]), label="ok")
        assert_that(out.rejected | beam.Map(lambda r: r["reason"]), equal_to(["empty"]), label="rejected")


def test_tokenize_lines_rejects_a_token_longer_than_max_token_chars():
    long = "x" * 11
    records = [
        _rec(1, "train", b"ten chars! fits"),                                    # lm line, 10 chars: ok
        _rec(2, "train", f"ok {long} tail".encode()),                            # lm line: token 2 too long
        {**_rec(3, "valid", f"{long}y".encode()), "label": "pos"},                # classification text
        {**_rec(4, "train", b"a b"), "label": "neg"},                             # ok
        {**_tok(5, "train", ["fine", "\ufb01" * 6]), "tags": ["O", "O"]},         # tagging: NFKC makes 12 chars
        {**_tok(6, "train", ["fine", "also"]), "tags": ["O", "O"]},               # ok
    ]
    with _pipeline() as p:
        out = p | beam.Create(records) | bt.TokenizeLines(TokenizerConfig(), max_length=5, max_token_chars=10)
        assert_that(out.accepted | beam.Map(lambda r: r["line"]), equal_to([1, 4, 6]), label="ok")
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["reason"], r["detail"], r["text"])),
            equal_to([
                (2, "token_too_long", "token 2 has 11 characters > max_token_chars 10: 'xxxxxxxxxxx'", f"ok {long} tail"),
                (3, "token_too_long", "token 1 has 12 characters > max_token_chars 10: 'xxxxxxxxxxxy'", f"{long}y"),
                (5, "token_too_long", "token 2 has 12 characters > max_token_chars 10: 'fifififififi'",
                 "fine " + "\ufb01" * 6),
            ]),
            label="rejected",
        )


def test_tokenize_lines_token_too_long_previews_a_huge_token_and_checks_the_target_side():
    huge = b"y" * (1 << 20)  # a 1 MiB one-word line
    pairs = [
        {**_rec(1, "train", b"abc"), "target_raw": b"c b a"},
        {**_rec(2, "train", b"abc"), "target_raw": b"c " + b"b" * 9},   # target token 2: 9 chars > 8
        {**_rec(3, "train", huge), "target_raw": b"y"},                 # source side
    ]
    with _pipeline() as p:
        out = p | beam.Create(pairs) | bt.TokenizeLines(TokenizerConfig(), max_length=5, max_token_chars=8,
                                                         target_config=TokenizerConfig())
        assert_that(out.accepted | beam.Map(lambda r: (r["tokens"], r["target_tokens"])),
                    equal_to([(["abc"], ["c", "b", "a"])]), label="ok")
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["reason"], r["detail"], len(r["text"]))),
            equal_to([
                (2, "token_too_long", "target: token 2 has 9 characters > max_token_chars 8: 'bbbbbbbbb'", 11),
                (3, "token_too_long", f"token 1 has {1 << 20} characters > max_token_chars 8: '{'y' * 40}...'",
                 len(bt._preview("y" * (1 << 20)))),
            ]),
            label="rejected",
        )
    assert "token_too_long" in bt.REJECT_REASONS
    with pytest.raises(ValueError, match="max_token_chars"):
        bt.TokenizeLines(TokenizerConfig(), max_length=5, max_token_chars=0)


def test_tokenize_lines_invalid_utf8_names_the_line_and_the_byte_of_the_text():
    records = [
        {**_rec(7, "train", b"caf\xe9 latin-1"), "label": "pos"},     # a TSV text: line 7 of its file
        {**_rec(1, "train", b"first line\r\nsecond \xff"), "label": "pos"},  # a document: the byte is on line 2
    ]
    with _pipeline() as p:
        out = p | beam.Create(records) | bt.TokenizeLines(TokenizerConfig(), max_length=5)
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["reason"], r["detail"])),
            equal_to([
                (7, "invalid_utf8", "line 7: invalid UTF-8 at byte 3 of the text (invalid continuation byte)"),
                (1, "invalid_utf8", "line 2: invalid UTF-8 at byte 19 of the text (invalid start byte)"),
            ]),
        )
    pairs = [{**_rec(4, "train", b"abc"), "target_raw": b"a \xff"}, {**_rec(5, "train", b"\xffa"), "target_raw": b"a"}]
    with _pipeline() as p:
        out = p | beam.Create(pairs) | bt.TokenizeLines(TokenizerConfig(), max_length=5, target_config=TokenizerConfig())
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["detail"])),
            equal_to([
                (4, "line 4: invalid UTF-8 at byte 2 of the target text (invalid start byte)"),
                (5, "line 5: invalid UTF-8 at byte 0 of the text (invalid start byte)"),
            ]),
        )


def test_count_tokens_counts_the_train_split_only():
    records = [_tok(1, "train", ["a", "b", "a"]), _tok(2, "test", ["a", "zebra"]), _tok(3, "train", ["b"])]
    with _pipeline() as p:
        assert_that(p | beam.Create(records) | bt.CountTokens("train"), equal_to([("a", 2), ("b", 2)]))


def test_build_vocabulary_is_a_single_deterministic_vocabulary():
    counts = [("b", 2), ("a", 2), ("c", 1), ("<unk>", 9)]
    with _pipeline() as p:
        vocab = p | beam.Create(counts) | bt.BuildVocabulary(max_size=6, min_count=2)
        assert_that(vocab | beam.Map(lambda v: v.tokens), equal_to([Vocabulary.from_counts(counts, 6, 2).tokens]))
    assert Vocabulary.from_counts(counts, 6, 2).tokens[4:] == ["a", "b"]


def test_encode_for_lm_appends_eos_and_counts_unknowns():
    vocab = Vocabulary.from_counts({"a": 2, "b": 1})
    records = [_tok(1, "train", ["a", "b"]), _tok(2, "test", ["zebra", "a"])]
    with _pipeline() as p:
        v = p | "Vocab" >> beam.Create([vocab])
        out = p | "Records" >> beam.Create(records) | bt.EncodeForLM(v)
        assert_that(
            out,
            equal_to(
                [
                    {"index": (0, 1), "split": "train", "features": {"ids": [4, 5, EOS_ID]}, "unk": 0, "labels": []},
                    {"index": (0, 2), "split": "test", "features": {"ids": [UNK_ID, 4, EOS_ID]}, "unk": 1, "labels": []},
                ]
            ),
        )


def _encoded(index, split, n, unk=0):
    return {"index": (0, index), "split": split, "features": {"ids": [4] * (n - 1) + [EOS_ID]}, "unk": unk, "labels": []}


def test_summarize_splits_stats_and_contiguous_boundaries():
    records = [_encoded(i, "train", i, unk=1) for i in range(1, 6)] + [_encoded(9, "valid", 8)]
    with _pipeline() as p:
        out = p | beam.Create(records) | bt.SummarizeSplits(num_shards=2)
        assert_that(
            out,
            equal_to(
                [
                    (
                        "train",
                        {
                            "examples": 5,
                            "tokens": 15,
                            "unk_tokens": 5,
                            "oov_rate": 5 / 15,
                            "length_histogram": {"1-1": 1, "2-3": 2, "4-7": 2},
                            "label_counts": {},
                            "num_shards": 2,
                            "boundaries": [(0, 1), (0, 3)],
                        },
                    ),
                    (
                        "valid",
                        {
                            "examples": 1,
                            "tokens": 8,
                            "unk_tokens": 0,
                            "oov_rate": 0.0,
                            "length_histogram": {"8-15": 1},
                            "label_counts": {},
                            "num_shards": 1,  # at most one shard per example
                            "boundaries": [(0, 9)],
                        },
                    ),
                ]
            ),
        )


def test_num_shards_auto_and_capped():
    assert bt.num_shards_for(tokens=2_500_000, examples=100, requested=0) == 3
    assert bt.num_shards_for(tokens=10, examples=100, requested=0) == 1
    assert bt.num_shards_for(tokens=10, examples=2, requested=4) == 2
    assert bt.num_shards_for(tokens=0, examples=0, requested=4) == 0


def _read_split(directory, split):
    files = sorted(tf.io.gfile.glob(os.path.join(directory, schema.shard_glob(split))))
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(lambda s: schema.parse_example("lm", s))
    return files, [ex["ids"].numpy().tolist() for ex in ds]


def _shard_info_matches_file(info, directory):
    """WriteShards' ``{"name", "sha256", "bytes", "examples", "tokens"}`` against the file it names."""
    import hashlib

    path = os.path.join(directory, info["name"])
    data = open(path, "rb").read()
    ids = [schema.parse_example("lm", r)["ids"].numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    return (info["sha256"], info["bytes"], info["examples"], info["tokens"]) == (
        hashlib.sha256(data).hexdigest(), len(data), len(ids), sum(len(i) for i in ids))


def _write_shards(directory, records, num_shards):
    with _pipeline() as p:
        encoded = p | "Records" >> beam.Create(records)
        summaries = encoded | bt.SummarizeSplits(num_shards=num_shards)
        infos = encoded | bt.WriteShards(str(directory), summaries)
        assert_that(
            infos | "Names" >> beam.Map(lambda info: info["name"]),
            equal_to([schema.shard_name("train", i, num_shards) for i in range(num_shards)]
                     + [schema.shard_name("valid", 0, 1)]),
        )
        assert_that(infos | "Check" >> beam.Map(_shard_info_matches_file, str(directory)),
                    equal_to([True] * (num_shards + 1)), label="ShardInfos")


def test_write_shards_keeps_corpus_order_across_shards_and_is_byte_identical(tmp_path):
    train = [{"index": (i // 4, i % 4), "split": "train", "features": {"ids": [10 + i, EOS_ID]}, "unk": 0, "labels": []}
             for i in range(10)]
    valid = [{"index": (9, 1), "split": "valid", "features": {"ids": [7, EOS_ID]}, "unk": 0, "labels": []}]
    records = list(reversed(train)) + valid  # arrival order must not matter
    _write_shards(tmp_path / "a", records, num_shards=3)
    files, ids = _read_split(tmp_path / "a", "train")
    assert [os.path.basename(f) for f in files] == [schema.shard_name("train", i, 3) for i in range(3)]
    assert ids == [r["features"]["ids"] for r in train]
    assert _read_split(tmp_path / "a", "valid")[1] == [[7, EOS_ID]]
    _write_shards(tmp_path / "b", train + valid, num_shards=3)
    for name in sorted(os.listdir(tmp_path / "a")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not [n for n in os.listdir(tmp_path / "a") if ".tmp-" in n]


def test_write_rejected_in_corpus_order_and_write_vocabulary(tmp_path):
    rejected = [
        {"index": (1, 2), "split": "train", "source": "b", "line": 2, "reason": "empty", "detail": "d", "text": ""},
        {"index": (0, 5), "split": "test", "source": "a", "line": 5, "reason": "too_long", "detail": "d", "text": "é"},
    ]
    vocab = Vocabulary.from_counts({"x": 1})
    with _pipeline() as p:
        summary = p | "Rejected" >> beam.Create(rejected) | bt.WriteRejected(str(tmp_path))
        info = p | "Vocab" >> beam.Create([vocab]) | bt.WriteVocabulary(str(tmp_path))
        assert_that(
            summary,
            equal_to([{"count": 2, "by_reason": {"empty": 1, "too_long": 1}, "path": bt.REJECTED_FILE}]),
            label="summary",
        )
        assert_that(info | beam.Map(lambda d: (d["path"], d["size"])), equal_to([(bt.VOCAB_FILE, 5)]), label="vocab")
    lines = (tmp_path / bt.REJECTED_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["a", "b"]
    assert json.loads(lines[0]) == {"source": "a", "line": 5, "split": "test", "reason": "too_long", "detail": "d",
                                    "text": "é"}
    assert Vocabulary.load(tmp_path / bt.VOCAB_FILE) == vocab


def test_write_rejected_writes_an_empty_file_when_nothing_is_rejected(tmp_path):
    with _pipeline() as p:
        summary = p | beam.Create([]) | bt.WriteRejected(str(tmp_path))
        assert_that(summary, equal_to([{"count": 0, "by_reason": {}, "path": bt.REJECTED_FILE}]))
    assert (tmp_path / bt.REJECTED_FILE).read_bytes() == b""
