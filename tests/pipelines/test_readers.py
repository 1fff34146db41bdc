"""pipelines.readers: exact items (examples and rejections) for small inline files of every format."""

import inspect

import pytest

from pipelines import readers
from pipelines.readers import (
    BAD_COLUMNS,
    BAD_FIELD,
    BAD_ID,
    BAD_JSON,
    EMPTY,
    INVALID_UTF8,
    MISSING_FIELD,
    MISSING_FORM,
    MISSING_LABEL,
    MISSING_TAG,
    READERS,
    REJECT_REASONS,
    read_columns,
    read_conllu,
    read_document,
)

BOM = b"\xef\xbb\xbf"
EXAMPLE_KEYS = {"lines": {"raw"}, "conllu": {"tokens", "tags"}, "columns": {"tokens", "tags"},
                "jsonl": {"raw", "label"}, "tsv": {"raw", "label"}, "document": {"raw", "label"}}


def read(fmt, data, **options):
    """All items, checked against the item contract: ordinals 0..n-1, lines increasing, exact keys."""
    items = list(READERS[fmt](data, **options))
    assert [it["item"] for it in items] == list(range(len(items)))
    lines = [it["line"] for it in items]
    assert lines == sorted(lines) and all(n >= 1 for n in lines)
    for it in items:
        if "reject" in it:
            assert set(it) == {"line", "item", "reject", "detail", "text"}
            assert it["reject"] in REJECT_REASONS
            assert isinstance(it["detail"], str) and f"line {it['line']}" in it["detail"]
            assert isinstance(it["text"], str)
        else:
            assert set(it) == {"line", "item"} | EXAMPLE_KEYS[fmt]
    return items


def rejections(items):
    return [(it["line"], it["item"], it["reject"]) for it in items if "reject" in it]


def conllu_line(i, form, upos="NOUN", xpos="NN", cols=None):
    row = [str(i), form, form.lower(), upos, xpos, "_", "0", "root", "_", "_"]
    return "\t".join(row if cols is None else row[:cols]).encode("utf-8")


def lines(*rows):
    return b"".join((r.encode("utf-8") if isinstance(r, str) else r) + b"\n" for r in rows)


# ------------------------------------------------------------------------------------- module
def test_readers_registry_and_reasons():
    assert set(READERS) == {"lines", "conllu", "columns", "jsonl", "tsv", "document", "pairs", "cmudict",
                            "csv", "slash_tagged", "records"}
    for name, fn in READERS.items():
        assert fn.__name__ == f"read_{name}"
        assert inspect.isgeneratorfunction(fn)
    # every reader is a registered format, and a format reads with its registered reader
    assert set(readers.FORMATS) == set(READERS)
    for name, fmt in readers.FORMATS.items():
        assert fmt.read is READERS[name]
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)
    assert {INVALID_UTF8, EMPTY} <= set(REJECT_REASONS)


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"a", b"a\n", b"a\r\nb\r\n", b"a\n\nb", BOM + b"x\ny\n", BOM, b"a\r\r\n", b"\r\n\r\n", b"a\n\n"],
)
def test_split_lines_matches_datasets(data):
    from pipelines import datasets

    assert readers.split_lines(data) == datasets.split_lines(data)


def test_readers_module_imports_no_tensorflow_or_beam():
    source = inspect.getsource(readers)
    assert "import tensorflow" not in source and "apache_beam" not in source
    assert "from pipelines" not in source and "import pipelines" not in source


# -------------------------------------------------------------------------------------- lines
def test_read_lines_every_line_is_an_item():
    data = BOM + b"first\r\n\r\n  \nlast"  # BOM, CRLF, blank lines, no final newline
    assert read("lines", data) == [
        {"line": 1, "item": 0, "raw": b"first"},
        {"line": 2, "item": 1, "raw": b""},
        {"line": 3, "item": 2, "raw": b"  "},
        {"line": 4, "item": 3, "raw": b"last"},
    ]


def test_read_lines_keeps_invalid_utf8_raw():
    assert read("lines", b"ok\n\xff\xfe\n") == [
        {"line": 1, "item": 0, "raw": b"ok"},
        {"line": 2, "item": 1, "raw": b"\xff\xfe"},
    ]
    assert read("lines", b"") == []


# ------------------------------------------------------------------------------------- conllu
CONLLU = lines(
    "# newdoc id = d1",             # 1
    "# sent_id = 1",                # 2
    "# text = Dogs bark.",          # 3
    conllu_line(1, "Dogs", "NOUN", "NNS"),   # 4
    conllu_line(2, "bark", "VERB", "VBP"),   # 5
    conllu_line(3, ".", "PUNCT", "."),       # 6
    "",                             # 7
    "",                             # 8 (two blank lines)
    "# sent_id = 2",                # 9
    "1-2\tvámonos\t_\t_\t_\t_\t_\t_\t_\t_",  # 10 multiword range: skipped
    conllu_line(1, "vamos", "VERB", "VMM"),  # 11
    conllu_line(2, "nos", "PRON", "PP"),     # 12
    "2.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_",  # 13 empty node: skipped
    conllu_line(3, "!", "PUNCT", "Fat"),     # 14
)


def test_read_conllu_valid_with_comments_ranges_and_empty_nodes():
    assert read("conllu", CONLLU) == [
        {"line": 1, "item": 0, "tokens": ["Dogs", "bark", "."], "tags": ["NOUN", "VERB", "PUNCT"]},
        {"line": 9, "item": 1, "tokens": ["vamos", "nos", "!"], "tags": ["VERB", "PRON", "PUNCT"]},
    ]


def test_read_conllu_xpos():
    items = read("conllu", CONLLU, tag_column="xpos")
    assert [it["tags"] for it in items] == [["NNS", "VBP", "."], ["VMM", "PP", "Fat"]]
    with pytest.raises(ValueError, match="tag_column"):
        list(read_conllu(CONLLU, tag_column="deprel"))


def test_read_conllu_crlf_bom_no_final_newline_and_whitespace_blank_lines():
    data = BOM + b"\r\n".join([
        b"# c",                          # 1
        conllu_line(1, "a"),             # 2
        b"   \t",                        # 3 whitespace-only: blank
        b"",                             # 4
        conllu_line(1, "b", "ADJ"),      # 5
        conllu_line(2, "c", "ADV"),      # 6 (no final newline)
    ])
    assert read("conllu", data) == [
        {"line": 1, "item": 0, "tokens": ["a"], "tags": ["NOUN"]},
        {"line": 5, "item": 1, "tokens": ["b", "c"], "tags": ["ADJ", "ADV"]},
    ]
    # trailing whitespace-only lines at the end of the file are blank too
    assert read("conllu", lines(conllu_line(1, "a"), " ", "\t")) == [
        {"line": 1, "item": 0, "tokens": ["a"], "tags": ["NOUN"]}
    ]


def test_read_conllu_comment_only_blocks_are_not_items():
    data = lines("# newdoc", "# global.columns = ID FORM", "", conllu_line(1, "x"), "", "# trailing comment")
    assert read("conllu", data) == [{"line": 4, "item": 0, "tokens": ["x"], "tags": ["NOUN"]}]
    assert read("conllu", b"") == []
    assert read("conllu", b"\n\n# only\n") == []


def test_read_conllu_rejections_keep_ordinals_and_account_for_every_sentence():
    data = lines(
        conllu_line(1, "ok"),                         # 1  item 0 ok
        "",
        conllu_line(1, "a"),                          # 3  item 1: 9 columns on line 4
        conllu_line(2, "b", cols=9),                  # 4
        "",
        "# sent_id = 3",                              # 6  item 2: UPOS "_" on line 8
        conllu_line(1, "c"),                          # 7
        conllu_line(2, "d", upos="_"),                # 8
        conllu_line(3, "e", upos="_"),                # 9  (second bad line: still one rejection)
        "",
        conllu_line(1, "f", upos=""),                 # 11 item 3: empty UPOS
        "",
        conllu_line(1, ""),                           # 13 item 4: empty FORM
        "",
        "1\tg\tg\tNOUN\tNN\t_\t0\troot\t_\t_",        # 15 item 5: bad ID on line 16
        "x\th\th\tNOUN\tNN\t_\t0\troot\t_\t_",        # 16
        "",
        b"# caf\xe9 comment",                         # 18 item 6: latin-1 byte in a comment
        conllu_line(1, "i"),                          # 19
        "",
        "1-2\tdu\t_\t_\t_\t_\t_\t_\t_\t_",            # 21 item 7: only a range, no word
        "",
        conllu_line(1, "last"),                       # 23 item 8 ok
    )
    items = read("conllu", data)
    assert items[0] == {"line": 1, "item": 0, "tokens": ["ok"], "tags": ["NOUN"]}
    assert items[-1] == {"line": 23, "item": 8, "tokens": ["last"], "tags": ["NOUN"]}
    assert rejections(items) == [
        (4, 1, BAD_COLUMNS),
        (8, 2, MISSING_TAG),
        (11, 3, MISSING_TAG),
        (13, 4, MISSING_FORM),
        (16, 5, BAD_ID),
        (18, 6, INVALID_UTF8),
        (21, 7, EMPTY),
    ]
    details = {it["item"]: it["detail"] for it in items if "reject" in it}
    assert details[1] == "line 4: 9 tab-separated columns, expected 10"
    assert "UPOS (column 4)" in details[2] and "'_'" in details[2] and "'d'" in details[2]
    assert "UPOS (column 4)" in details[3]
    assert "FORM (column 2)" in details[4]
    assert "'x'" in details[5] and "ID (column 1)" in details[5]
    assert "invalid UTF-8" in details[6]
    # the preview holds the whole sentence, undecodable bytes escaped
    assert items[6]["text"].startswith("# caf\\xe9 comment\n1\ti\t")
    assert items[2]["text"].count("\n") == 3  # the comment line and three word lines


def test_read_conllu_too_many_columns_and_line_without_tabs():
    data = lines(conllu_line(1, "a") + b"\textra", "", "just some text")
    items = read("conllu", data)
    assert rejections(items) == [(1, 0, BAD_COLUMNS), (3, 1, BAD_COLUMNS)]
    assert items[0]["detail"] == "line 1: 11 tab-separated columns, expected 10"
    assert items[1]["detail"] == "line 3: 1 tab-separated column, expected 10"


def test_read_conllu_underscore_form_is_a_word():
    assert read("conllu", lines(conllu_line(1, "_", "PUNCT"))) == [
        {"line": 1, "item": 0, "tokens": ["_"], "tags": ["PUNCT"]}
    ]


# ------------------------------------------------------------------------------------ columns
CONLL03 = lines(
    "-DOCSTART- -X- -X- O",   # 1 skipped
    "",                       # 2
    "EU NNP B-NP B-ORG",      # 3
    "rejects VBZ B-VP O",     # 4
    "German JJ B-NP B-MISC",  # 5
    "",                       # 6
    "-DOCSTART- -X- -X- O",   # 7 skipped
    "",                       # 8
    "Peter NNP B-NP B-PER",   # 9
    "Blackburn NNP I-NP I-PER",  # 10
)


def test_read_columns_conll2003_with_docstart():
    assert read("columns", CONLL03) == [
        {"line": 3, "item": 0, "tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
        {"line": 9, "item": 1, "tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
    ]


def test_read_columns_other_columns():
    items = read("columns", CONLL03, token_column=0, tag_column=1)
    assert [it["tags"] for it in items] == [["NNP", "VBZ", "JJ"], ["NNP", "NNP"]]
    items = read("columns", CONLL03, token_column=-4, tag_column=2)
    assert [it["tags"] for it in items] == [["B-NP", "B-VP", "B-NP"], ["B-NP", "I-NP"]]
    with pytest.raises(TypeError):
        list(read_columns(CONLL03, tag_column="3"))


def test_read_columns_docstart_glued_to_a_sentence_and_alone_at_the_end():
    data = lines("-DOCSTART- O", "a O", "b B-X", "", "-DOCSTART- O")
    assert read("columns", data) == [{"line": 2, "item": 0, "tokens": ["a", "b"], "tags": ["O", "B-X"]}]


def test_read_columns_tab_separator_keeps_spaces_crlf_bom_no_final_newline():
    data = BOM + b"New York\tB-LOC\r\ncity\tO\r\n\r\n\r\nhi\tO"
    assert read("columns", data, separator="\t") == [
        {"line": 1, "item": 0, "tokens": ["New York", "city"], "tags": ["B-LOC", "O"]},
        {"line": 5, "item": 1, "tokens": ["hi"], "tags": ["O"]},
    ]
    # with the default whitespace separator, the same line has three columns
    assert read("columns", b"New York\tB-LOC\n", token_column=0, tag_column=-1) == [
        {"line": 1, "item": 0, "tokens": ["New"], "tags": ["B-LOC"]}
    ]


def test_read_columns_rejections():
    data = lines(
        "a NN O",          # 1 item 0: line 2 has too few columns for tag_column=2
        "b",               # 2
        "",
        "c NN O",          # 4 item 1: inconsistent column count on line 5
        "d NN X O",        # 5
        "",
        b"\xe9t\xe9 NN O",  # 7 item 2: invalid UTF-8
        "",
        "e NN O",          # 9 item 3: ok
    )
    items = read("columns", data, tag_column=2)
    assert rejections(items) == [(2, 0, BAD_COLUMNS), (5, 1, BAD_COLUMNS), (7, 2, INVALID_UTF8)]
    assert items[0]["detail"] == "line 2: 1 column, too few for tag_column=2"
    assert items[1]["detail"] == "line 5: 4 columns, but the sentence's first line (line 4) has 3"
    assert items[2]["text"] == "\\xe9t\\xe9 NN O"
    assert items[3] == {"line": 9, "item": 3, "tokens": ["e"], "tags": ["O"]}
    assert items[0]["text"] == "a NN O\nb"


def test_read_columns_empty_fields_with_explicit_separator():
    items = read("columns", b"a\t\n\nb\tO\n\n\tO\n", separator="\t")
    assert rejections(items) == [(1, 0, MISSING_TAG), (5, 2, MISSING_FORM)]
    assert items[1] == {"line": 3, "item": 1, "tokens": ["b"], "tags": ["O"]}


def test_read_columns_line_without_a_separate_tag_column_is_bad_columns():
    data = lines(
        "a O",        # 1 item 0: line 2 has one column: token_column 0 and tag_column -1 are both column 0
        "b",          # 2
        "",
        "word",       # 4 item 1: a one-column first line
        "",
        "c O",        # 6 item 2 ok
    )
    items = read("columns", data)
    assert rejections(items) == [(2, 0, BAD_COLUMNS), (4, 1, BAD_COLUMNS)]
    assert items[0]["detail"] == (
        "line 2: 1 column, no separate tag column (token_column=0 and tag_column=-1 are both column 0)"
    )
    assert items[1]["detail"].startswith("line 4: 1 column, no separate tag column")
    assert items[2] == {"line": 6, "item": 2, "tokens": ["c"], "tags": ["O"]}
    # the same with an explicit separator: "New York" alone is one column, not a token tagged "New York"
    items = read("columns", b"New York\n\nParis\tB-LOC\n", separator="\t")
    assert rejections(items) == [(1, 0, BAD_COLUMNS)]
    assert items[1] == {"line": 3, "item": 1, "tokens": ["Paris"], "tags": ["B-LOC"]}
    # negative and positive indices naming the same column on a line
    items = read("columns", b"a b\n", token_column=1, tag_column=-1)
    assert rejections(items) == [(1, 0, BAD_COLUMNS)]
    assert "both column 1" in items[0]["detail"]
    # the same index for both is an option error
    with pytest.raises(ValueError, match="token_column and tag_column"):
        list(read_columns(b"a b\n", token_column=1, tag_column=1))


# -------------------------------------------------------------------------------------- jsonl
def test_read_jsonl_valid():
    data = BOM + lines(
        '{"text": "caf\\u00e9 ok", "label": "pos", "id": 7}',
        "",
        "   ",
        '{"label": 3, "text": "numbers"}',
    ).replace(b"\n", b"\r\n") + b'{"text": "", "label": "neg"}'  # no final newline; empty text passes
    assert read("jsonl", data, label_types="any") == [
        {"line": 1, "item": 0, "raw": "café ok".encode("utf-8"), "label": "pos"},
        {"line": 4, "item": 1, "raw": b"numbers", "label": "3"},
        {"line": 5, "item": 2, "raw": b"", "label": "neg"},
    ]


def test_read_jsonl_custom_fields():
    data = lines('{"sentence": "a b", "y": -1}')
    assert read("jsonl", data, text_field="sentence", label_field="y", label_types="any") == [
        {"line": 1, "item": 0, "raw": b"a b", "label": "-1"}
    ]
    assert rejections(read("jsonl", data)) == [(1, 0, MISSING_FIELD)]


def test_read_jsonl_rejections():
    data = lines(
        '{"text": "fine", "label": "a"}',          # 1 item 0 ok
        '{"text": "unterminated", "label": "a"',   # 2 item 1 bad json
        '["text", "label"]',                       # 3 item 2 not an object
        '{"label": "a"}',                          # 4 item 3 missing text
        '{"text": "t"}',                           # 5 item 4 missing label
        '{"text": 5, "label": "a"}',               # 6 item 5 text not a string
        '{"text": "t", "label": true}',            # 7 item 6 bool label
        '{"text": "t", "label": 1.5}',             # 8 item 7 float label
        '{"text": "t", "label": ["a"]}',           # 9 item 8 list label
        '{"text": "t", "label": {"a": 1}}',        # 10 item 9 dict label
        '{"text": "t", "label": null}',            # 11 item 10 null label
        b'{"text": "\xff", "label": "a"}',         # 12 item 11 invalid UTF-8
        '{"text": "\\ud800", "label": "a"}',       # 13 item 12 lone surrogate
        '{"text": "t", "label": ""}',              # 14 item 13 empty label
        "",                                        # 15 blank: skipped
        "not json at all",                         # 16 item 14
        '{"text": "last", "label": "0"}',          # 17 item 15 ok
    )
    items = read("jsonl", data)
    assert rejections(items) == [
        (2, 1, BAD_JSON), (3, 2, BAD_JSON), (4, 3, MISSING_FIELD), (5, 4, MISSING_FIELD), (6, 5, BAD_FIELD),
        (7, 6, BAD_FIELD), (8, 7, BAD_FIELD), (9, 8, BAD_FIELD), (10, 9, BAD_FIELD), (11, 10, BAD_FIELD),
        (12, 11, INVALID_UTF8), (13, 12, BAD_FIELD), (14, 13, MISSING_LABEL), (16, 14, BAD_JSON),
    ]
    assert items[0] == {"line": 1, "item": 0, "raw": b"fine", "label": "a"}
    assert items[15] == {"line": 17, "item": 15, "raw": b"last", "label": "0"}
    detail = {it["item"]: it["detail"] for it in items if "reject" in it}
    assert detail[2] == "line 3: expected a JSON object, got array"
    assert detail[3] == "line 4: no field 'text'"
    assert detail[4] == "line 5: no field 'label'"
    assert detail[5] == "line 6: field 'text' is integer, expected a string"
    assert "'label' is boolean" in detail[6] and "'label' is number" in detail[7]
    assert "'label' is array" in detail[8] and "'label' is object" in detail[9] and "'label' is null" in detail[10]
    assert "'text'" in detail[12] and "surrogate" in detail[12]
    assert items[11]["text"] == '{"text": "\\xff", "label": "a"}'
    assert items[14]["text"] == "not json at all"


def test_read_jsonl_non_string_labels_are_bad_field_unless_label_types_any():
    data = lines(
        '{"text": "a", "label": 1}',        # 1 item 0 integer
        '{"text": "b", "label": -7}',       # 2 item 1 negative integer
        '{"text": "c", "label": true}',     # 3 item 2 boolean
        '{"text": "d", "label": 1.0}',      # 4 item 3 float
        '{"text": "e", "label": [1]}',      # 5 item 4 array
        '{"text": "f", "label": {"a": 1}}', # 6 item 5 object
        '{"text": "g", "label": null}',     # 7 item 6 null
        '{"text": "h", "label": "1"}',      # 8 item 7 string
    )
    items = read("jsonl", data)  # label_types="string", the default
    assert rejections(items) == [(n, n - 1, BAD_FIELD) for n in range(1, 8)]
    assert items[0]["detail"] == "line 1: field 'label' is integer, expected a string (or set reader.label_types: any)"
    assert items[7] == {"line": 8, "item": 7, "raw": b"h", "label": "1"}
    items = read("jsonl", data, label_types="any")
    assert [it.get("label") for it in items] == ["1", "-7", "true", None, None, None, None, "1"]
    assert rejections(items) == [(n, n - 1, BAD_FIELD) for n in range(4, 8)]
    assert "'label' is number" in items[3]["detail"] and "float" in items[3]["detail"]
    assert "'label' is array" in items[4]["detail"] and "'label' is null" in items[6]["detail"]
    with pytest.raises(ValueError, match="label_types"):
        list(readers.read_jsonl(data, label_types="int"))


def test_read_jsonl_invalid_utf8_inside_a_string_names_the_line():
    data = lines('{"text": "ok", "label": "a"}', b'{"text": "caf\xe9", "label": "a"}')
    items = read("jsonl", data)
    assert rejections(items) == [(2, 1, INVALID_UTF8)]
    assert items[1]["detail"] == "line 2: invalid UTF-8 at byte 13 of the line (invalid continuation byte)"


# ---------------------------------------------------------------------------------------- tsv
def test_read_tsv_valid():
    data = BOM + b"pos\tgood movie\r\n\r\nneg\ttabs\tinside\ttext\r\n \t \nneu\t"  # CRLF, no final newline
    assert read("tsv", data) == [
        {"line": 1, "item": 0, "raw": b"good movie", "label": "pos"},
        {"line": 3, "item": 1, "raw": b"tabs\tinside\ttext", "label": "neg"},
        {"line": 5, "item": 2, "raw": b"", "label": "neu"},  # empty text: rejected downstream as empty
    ]


def test_read_tsv_rejections_and_raw_text():
    data = lines(
        "no tab here",          # 1 item 0 bad columns
        "\ttext without label",  # 2 item 1 missing label
        b"\xffab\ttext",         # 3 item 2 invalid UTF-8 in the label
        b"pos\t\xff raw",        # 4 item 3 ok: text bytes stay raw (checked downstream)
        "",
        "neg\tlast",            # 6 item 4
    )
    items = read("tsv", data)
    assert rejections(items) == [(1, 0, BAD_COLUMNS), (2, 1, MISSING_LABEL), (3, 2, INVALID_UTF8)]
    assert items[3] == {"line": 4, "item": 3, "raw": b"\xff raw", "label": "pos"}
    assert items[4] == {"line": 6, "item": 4, "raw": b"last", "label": "neg"}
    assert "no tab" in items[0]["detail"]
    assert "label (column 1)" in items[1]["detail"] and "label (column 1)" in items[2]["detail"]
    assert items[2]["text"] == "\\xffab\ttext"


# ----------------------------------------------------------------------------------- document
def test_read_document():
    data = BOM + b"Line one.\r\nLine two\n"
    assert read("document", data, label="sport") == [
        {"line": 1, "item": 0, "raw": b"Line one.\r\nLine two\n", "label": "sport"}
    ]
    assert read("document", b"x", label=4) == [{"line": 1, "item": 0, "raw": b"x", "label": "4"}]
    assert read("document", b"\xff", label="a") == [{"line": 1, "item": 0, "raw": b"\xff", "label": "a"}]


@pytest.mark.parametrize("data", [b"", BOM, b" \r\n\t\n", BOM + b"\n"])
def test_read_document_empty(data):
    items = read("document", data, label="a")
    assert rejections(items) == [(1, 0, EMPTY)]


def test_read_document_bad_label():
    with pytest.raises(TypeError):
        list(read_document(b"x", label=None))
    with pytest.raises(ValueError):
        list(read_document(b"x", label=" "))


# --------------------------------------------------------------------------------- everything
def test_preview_is_capped():
    items = read("tsv", b"x" * 5000 + b"\n")
    assert items[0]["reject"] == BAD_COLUMNS
    assert items[0]["text"] == "x" * 2000 + "... [3000 more characters]"


@pytest.mark.parametrize(
    "fmt, data, options, units",
    [
        ("lines", b"a\n\nb\n", {}, 3),
        ("conllu", CONLLU, {}, 2),
        ("columns", CONLL03, {}, 2),
        ("jsonl", b'{"text":"a","label":1}\n\n[1]\n{}\n', {}, 3),
        ("tsv", b"a\tb\n\nno tab\n", {}, 2),
        ("document", b"text", {"label": "l"}, 1),
    ],
)
def test_every_unit_is_accounted_for(fmt, data, options, units):
    assert len(read(fmt, data, **options)) == units
    assert list(READERS[fmt](data, **options)) == list(getattr(readers, f"read_{fmt}")(data, **options))


# ------------------------------------------------------------------------------ pairs / cmudict
def test_read_pairs_splits_at_the_first_tab_and_rejects_lines_without_one():
    data = b"abc\tc b a\n\nno tab here\nx\ty\tz\n"
    assert list(readers.read_pairs(data)) == [
        {"line": 1, "item": 0, "raw": b"abc", "target_raw": b"c b a", "group": "abc"},
        {"line": 3, "item": 1, "reject": BAD_COLUMNS, "detail": "line 3: no tab between source and target",
         "text": "no tab here"},
        {"line": 4, "item": 2, "raw": b"x", "target_raw": b"y\tz", "group": "x"},
    ]


def test_read_cmudict_variants_comments_and_stress():
    data = b"a AH0\na(2) EY1\naalen AE1 L AH0 N # place, german\n\nbad\n"
    items = list(readers.read_cmudict(data))
    assert items[:3] == [
        {"line": 1, "item": 0, "raw": b"a", "target_raw": b"AH0", "group": "a"},
        {"line": 2, "item": 1, "raw": b"a", "target_raw": b"EY1", "group": "a"},  # an alternate: same word
        {"line": 3, "item": 2, "raw": b"aalen", "target_raw": b"AE1 L AH0 N", "group": "aalen"},
    ]
    assert items[3]["reject"] == BAD_COLUMNS and items[3]["line"] == 5
    no_stress = list(readers.read_cmudict(data, remove_stress=True))
    assert [i["target_raw"] for i in no_stress[:3]] == [b"AH", b"EY", b"AE L AH N"]
    assert list(readers.read_cmudict(b"caf\xe9 K AE F\n"))[0]["reject"] == INVALID_UTF8
