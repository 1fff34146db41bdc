"""TokenizeLines (:mod:`pipelines.beam.tokenization`): accepted records and rejections with their reasons."""

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_helpers import pipeline, rec, tok
from pipelines.beam.rejects import REJECT_REASONS, preview
from pipelines.beam.tokenization import BatchRecords, TokenizeLines, batch_key
from preprocessing.tokenizers import TokenizerConfig


def test_tokenize_lines_accepts_and_rejects_with_reasons():
    records = [
        rec(1, "train", "The  cat".encode()),
        rec(2, "train", b"bad \xff byte"),
        rec(3, "train", b""),
        rec(4, "valid", b"   \t "),
        rec(5, "test", b"one two three four"),
        rec(6, "test", "\ufb01ne".encode()),  # NFKC: the fi ligature becomes "fi"
    ]
    with pipeline() as p:
        out = p | beam.Create(records) | TokenizeLines(TokenizerConfig(lowercase=True), max_length=3)
        assert_that(out.accepted, equal_to([tok(1, "train", ["the", "cat"]), tok(6, "test", ["fine"])]), label="ok")
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
    records = [rec(1, "train", b"a b"), rec(2, "train", b"   ")]
    with pipeline() as p:
        out = p | beam.Create(records) | TokenizeLines(TokenizerConfig(level="char"), max_length=10)
        assert_that(out.accepted, equal_to([tok(1, "train", ["a", " ", "b"])]), label="ok")
        assert_that(out.rejected | beam.Map(lambda r: r["reason"]), equal_to(["empty"]), label="rejected")


def test_tokenize_lines_rejects_a_token_longer_than_max_token_chars():
    long = "x" * 11
    records = [
        rec(1, "train", b"ten chars! fits"),                                    # lm line, 10 chars: ok
        rec(2, "train", f"ok {long} tail".encode()),                            # lm line: token 2 too long
        {**rec(3, "valid", f"{long}y".encode()), "label": "pos"},                # classification text
        {**rec(4, "train", b"a b"), "label": "neg"},                             # ok
        {**tok(5, "train", ["fine", "\ufb01" * 6]), "tags": ["O", "O"]},         # tagging: NFKC makes 12 chars
        {**tok(6, "train", ["fine", "also"]), "tags": ["O", "O"]},               # ok
    ]
    with pipeline() as p:
        out = p | beam.Create(records) | TokenizeLines(TokenizerConfig(), max_length=5, max_token_chars=10)
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
        {**rec(1, "train", b"abc"), "target_raw": b"c b a"},
        {**rec(2, "train", b"abc"), "target_raw": b"c " + b"b" * 9},   # target token 2: 9 chars > 8
        {**rec(3, "train", huge), "target_raw": b"y"},                 # source side
    ]
    with pipeline() as p:
        out = p | beam.Create(pairs) | TokenizeLines(TokenizerConfig(), max_length=5, max_token_chars=8,
                                                         target_config=TokenizerConfig())
        assert_that(out.accepted | beam.Map(lambda r: (r["tokens"], r["target_tokens"])),
                    equal_to([(["abc"], ["c", "b", "a"])]), label="ok")
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["reason"], r["detail"], len(r["text"]))),
            equal_to([
                (2, "token_too_long", "target: token 2 has 9 characters > max_token_chars 8: 'bbbbbbbbb'", 11),
                (3, "token_too_long", f"token 1 has {1 << 20} characters > max_token_chars 8: '{'y' * 40}...'",
                 len(preview("y" * (1 << 20)))),
            ]),
            label="rejected",
        )
    assert "token_too_long" in REJECT_REASONS
    with pytest.raises(ValueError, match="max_token_chars"):
        TokenizeLines(TokenizerConfig(), max_length=5, max_token_chars=0)


def test_tokenize_lines_invalid_utf8_names_the_line_and_the_byte_of_the_text():
    records = [
        {**rec(7, "train", b"caf\xe9 latin-1"), "label": "pos"},     # a TSV text: line 7 of its file
        {**rec(1, "train", b"first line\r\nsecond \xff"), "label": "pos"},  # a document: the byte is on line 2
    ]
    with pipeline() as p:
        out = p | beam.Create(records) | TokenizeLines(TokenizerConfig(), max_length=5)
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["reason"], r["detail"])),
            equal_to([
                (7, "invalid_utf8", "line 7: invalid UTF-8 at byte 3 of the text (invalid continuation byte)"),
                (1, "invalid_utf8", "line 2: invalid UTF-8 at byte 19 of the text (invalid start byte)"),
            ]),
        )
    pairs = [{**rec(4, "train", b"abc"), "target_raw": b"a \xff"}, {**rec(5, "train", b"\xffa"), "target_raw": b"a"}]
    with pipeline() as p:
        out = p | beam.Create(pairs) | TokenizeLines(TokenizerConfig(), max_length=5, target_config=TokenizerConfig())
        assert_that(
            out.rejected | beam.Map(lambda r: (r["line"], r["detail"])),
            equal_to([
                (4, "line 4: invalid UTF-8 at byte 2 of the target text (invalid start byte)"),
                (5, "line 5: invalid UTF-8 at byte 0 of the text (invalid start byte)"),
            ]),
        )


def test_batch_records_puts_every_record_in_one_batch_of_about_the_size():
    records = [rec(i, "train", f"line {i}".encode()) for i in range(50)]
    with pipeline() as p:
        batches = p | beam.Create(records) | BatchRecords(batch_size=10)
        sizes = batches | "Sizes" >> beam.Map(len) | beam.combiners.ToList()
        assert_that(sizes, lambda got: _check_sizes(got[0], total=50, batches=5), label="sizes")
        assert_that(batches | beam.FlatMap(lambda b: b), equal_to(records), label="records")
    # the batch depends on the record and the count only (the same on every runner and worker)
    assert [batch_key(r, 50, 10) for r in records] == [batch_key(dict(r), 50, 10) for r in records]
    assert {batch_key(r, 50, 10) for r in records} <= set(range(5))
    assert {batch_key(r, 5, 10) for r in records} == {0}


def _check_sizes(sizes, total, batches):
    assert sum(sizes) == total and 1 <= len(sizes) <= batches, sizes


def test_tokenize_lines_on_more_records_than_a_batch_keeps_each_once():
    records = [rec(i, "train", f"w{i} x".encode()) for i in range(40)] + [rec(40, "train", b"  ")]
    with pipeline() as p:
        out = p | beam.Create(records) | TokenizeLines(TokenizerConfig(), max_length=5, batch_size=7)
        assert_that(out.accepted, equal_to([tok(i, "train", [f"w{i}", "x"]) for i in range(40)]), label="ok")
        assert_that(out.rejected | beam.Map(lambda r: (r["line"], r["reason"])), equal_to([(40, "empty")]),
                    label="rejected")


def test_batch_records_refuses_a_bad_size():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        BatchRecords(batch_size=0)
