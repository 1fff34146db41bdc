"""pipelines.readers: the csv, slash_tagged and records formats (exact items), and the module docstring."""

import csv
import inspect

import pytest

from pipelines import readers
from pipelines.readers import (
    BAD_COLUMNS,
    INVALID_UTF8,
    MISSING_FIELD,
    MISSING_FORM,
    MISSING_LABEL,
    MISSING_TAG,
    READERS,
    REJECT_REASONS,
    read_csv,
    read_records,
)

BOM = b"\xef\xbb\xbf"
CLASSIFY = (("raw", "text"), ("label", "category"))
PAIRS = (("raw", "source"), ("target_raw", "target"))
LM = (("raw", "text"),)


def read(fmt, data, **options):
    """All items, checked against the item contract: ordinals 0..n-1, lines increasing, rejections well formed."""
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
    return items


def rejections(items):
    return [(it["line"], it["item"], it["reject"]) for it in items if "reject" in it]


# ------------------------------------------------------------------------------------- module
def test_new_readers_are_registered_generators():
    for name in ("csv", "slash_tagged", "records"):
        assert READERS[name] is getattr(readers, f"read_{name}")
        assert inspect.isgeneratorfunction(READERS[name])


def test_every_reader_has_a_section_in_the_module_docstring():
    doc = readers.__doc__
    formats = doc[doc.index("\nFormats\n-------\n"):]
    for name in READERS:
        assert f"\n``{name}`` — :func:`read_{name}`" in formats, name


# ---------------------------------------------------------------------------------------- csv
def test_read_csv_classification_quoting_and_embedded_newlines():
    data = (
        b"text,category\n"                      # 1 header
        b'"Hello, world",greeting\n'            # 2 delimiter inside quotes
        b'"She said ""hi""",quote\n'            # 3 doubled quotes
        b'"two\nlines, and\n\nmore",multi\n'    # 4-7 embedded newlines (and an embedded blank line)
        b"plain,after\n"                        # 8
        b'"",empty text\n'                      # 9 an empty text is kept (rejected downstream)
    )
    assert read("csv", data, fields=CLASSIFY) == [
        {"line": 2, "item": 0, "raw": b"Hello, world", "label": "greeting"},
        {"line": 3, "item": 1, "raw": b'She said "hi"', "label": "quote"},
        {"line": 4, "item": 2, "raw": b"two\nlines, and\n\nmore", "label": "multi"},
        {"line": 8, "item": 3, "raw": b"plain", "label": "after"},
        {"line": 9, "item": 4, "raw": b"", "label": "empty text"},
    ]


def test_read_csv_pairs_have_a_group_and_columns_are_chosen_by_name():
    data = "id,target,source,note\n1,chat,cat,x\n2,chien,dog,y\n3,\"l'été\",summer,z\n".encode("utf-8")
    assert read("csv", data, fields=PAIRS) == [
        {"line": 2, "item": 0, "raw": b"cat", "target_raw": b"chat", "group": "cat"},
        {"line": 3, "item": 1, "raw": b"dog", "target_raw": b"chien", "group": "dog"},
        {"line": 4, "item": 2, "raw": b"summer", "target_raw": "l'été".encode("utf-8"), "group": "summer"},
    ]


def test_read_csv_lm_field_and_other_delimiter():
    assert read("csv", b"n\ttext\n1\tone, two\n2\t\"a\tb\"\n", fields=LM, delimiter="\t") == [
        {"line": 2, "item": 0, "raw": b"one, two"},
        {"line": 3, "item": 1, "raw": b"a\tb"},
    ]
    assert read("csv", b"text;x\nsemi;1\n", fields=LM, delimiter=";") == [{"line": 2, "item": 0, "raw": b"semi"}]


def test_read_csv_bom_crlf_blank_lines_and_no_final_newline():
    data = BOM + b'text,category\r\n\r\n"a\r\nb",x\r\n   \r\n\r\nc,y'
    assert read("csv", data, fields=CLASSIFY) == [
        {"line": 3, "item": 0, "raw": b"a\nb", "label": "x"},  # CRLF inside quotes becomes \n
        {"line": 7, "item": 1, "raw": b"c", "label": "y"},
    ]
    # blank lines before the header: the first non-blank record is the header
    assert read("csv", b"\n\ntext,category\nz,w\n", fields=CLASSIFY) == [
        {"line": 4, "item": 0, "raw": b"z", "label": "w"},
    ]
    assert read("csv", b"", fields=LM) == []
    assert read("csv", b"text,category\n", fields=CLASSIFY) == []  # a header only: no items


def test_read_csv_missing_column_rejects_every_record():
    data = b"text,label\na,x\n\nb,y\n"
    items = read("csv", data, fields=CLASSIFY)
    assert items == [
        {"line": 2, "item": 0, "reject": MISSING_FIELD,
         "detail": "line 2: no column 'category' in the header (line 1: columns 'text', 'label')", "text": "a,x"},
        {"line": 4, "item": 1, "reject": MISSING_FIELD,
         "detail": "line 4: no column 'category' in the header (line 1: columns 'text', 'label')", "text": "b,y"},
    ]


def test_read_csv_wrong_field_counts_and_empty_label():
    data = (
        b"text,category\n"  # 1
        b"short\n"          # 2: one field
        b"a,b,c\n"          # 3: three fields
        b"ok,x\n"           # 4
        b"no label,\n"      # 5: empty label
        b'blank label,"  "\n'  # 6: whitespace-only label
        b"last,y\n"         # 7
    )
    items = read("csv", data, fields=CLASSIFY)
    assert rejections(items) == [(2, 0, BAD_COLUMNS), (3, 1, BAD_COLUMNS), (5, 3, MISSING_LABEL), (6, 4, MISSING_LABEL)]
    assert items[0]["detail"] == "line 2: 1 field, but the header (line 1) has 2"
    assert items[1]["detail"] == "line 3: 3 fields, but the header (line 1) has 2"
    assert items[3]["detail"] == "line 5: label (column 'category') is empty"
    assert items[3]["text"] == "no label,"
    assert items[2] == {"line": 4, "item": 2, "raw": b"ok", "label": "x"}
    assert items[5] == {"line": 7, "item": 5, "raw": b"last", "label": "y"}


def test_read_csv_invalid_utf8_spoils_only_its_record():
    data = (
        b"text,category\n"
        b"good,a\n"                      # 2
        b'"multi\nbad \xff here",b\n'    # 3-4: the undecodable line is line 4
        b'caf\xe9,c\n'                   # 5 (Latin-1)
        b"fine,d\n"                      # 6
    )
    items = read("csv", data, fields=CLASSIFY)
    assert items == [
        {"line": 2, "item": 0, "raw": b"good", "label": "a"},
        {"line": 4, "item": 1, "reject": INVALID_UTF8,
         "detail": "line 4: invalid UTF-8 at byte 4 of the line (invalid start byte)",
         "text": '"multi\nbad \\xff here",b'},
        {"line": 5, "item": 2, "reject": INVALID_UTF8,
         "detail": "line 5: invalid UTF-8 at byte 3 of the line (invalid continuation byte)", "text": "caf\\xe9,c"},
        {"line": 6, "item": 3, "raw": b"fine", "label": "d"},
    ]


def test_read_csv_invalid_utf8_header_rejects_every_record():
    items = read("csv", b"te\xffxt,category\na,b\n", fields=CLASSIFY)
    assert rejections(items) == [(2, 0, INVALID_UTF8)]
    assert items[0]["detail"] == (
        "line 2: the header is not valid UTF-8 (line 1: invalid UTF-8 at byte 2 of the line (invalid start byte))"
    )


def test_read_csv_unterminated_quote_at_the_end_is_one_rejection():
    data = b'text,category\nok,a\n"never closed,b\nmore,c\n'
    items = read("csv", data, fields=CLASSIFY)
    assert items == [
        {"line": 2, "item": 0, "raw": b"ok", "label": "a"},
        {"line": 3, "item": 1, "reject": BAD_COLUMNS,
         "detail": "line 3: quoted field not closed at the end of the file (line 4)",
         "text": '"never closed,b\nmore,c'},
    ]


def test_read_csv_unterminated_quote_in_the_header_is_a_rejection():
    items = read("csv", b'"text,category\na,b\n', fields=CLASSIFY)
    assert rejections(items) == [(1, 0, BAD_COLUMNS)]
    assert items[0]["text"] == '"text,category\na,b'


def test_read_csv_malformed_quoting_resumes_where_the_standard_reader_does():
    data = (
        b"text,category\n"
        b'"a"b,"spans\nlines",c\n'  # 2-3: a character after a closing quote
        b"after,d\n"                # 4
        b"x\ry,e\n"                 # 5: a lone CR in an unquoted field
        b"end,f\n"                  # 6
    )
    items = read("csv", data, fields=CLASSIFY)
    assert rejections(items) == [(2, 0, BAD_COLUMNS), (5, 2, BAD_COLUMNS)]
    assert items[0]["text"] == '"a"b,"spans\nlines",c'  # the quoted field's second line is not a record
    assert items[0]["detail"].startswith("line 2: not valid CSV at line 2 (")
    assert items[1] == {"line": 4, "item": 1, "raw": b"after", "label": "d"}
    assert items[3] == {"line": 6, "item": 3, "raw": b"end", "label": "f"}


def test_read_csv_repeated_header_column_is_ambiguous():
    items = read("csv", b"text,text,category\na,b,c\n", fields=CLASSIFY)
    assert rejections(items) == [(2, 0, BAD_COLUMNS)]
    assert items[0]["detail"] == "line 2: column 'text' appears 2 times in the header (line 1)"
    # a repeated column that is not requested is harmless
    assert read("csv", b"x,x,text\n1,2,t\n", fields=LM) == [{"line": 2, "item": 0, "raw": b"t"}]


def test_read_csv_long_fields_are_read():
    text = "w" * (csv.field_size_limit() + 10)
    data = f'text,category\n"{text}",x\nnext,y\n'.encode("utf-8")
    items = read("csv", data, fields=CLASSIFY)
    assert [it.get("label") for it in items] == ["x", "y"] and items[0]["raw"] == text.encode("utf-8")


@pytest.mark.parametrize(
    "options, error",
    [
        ({"fields": ()}, ValueError),
        ({"fields": (("text", "text"),)}, ValueError),
        ({"fields": (("raw", "a"), ("raw", "b"))}, ValueError),
        ({"fields": (("group", "a"),)}, ValueError),
        ({"fields": "raw"}, TypeError),
        ({"fields": ("raw", "text")}, TypeError),
        ({"fields": (("raw", "text", "x"),)}, TypeError),
        ({"fields": (("raw", 1),)}, TypeError),
        ({"fields": LM, "delimiter": ""}, ValueError),
        ({"fields": LM, "delimiter": ",,"}, ValueError),
        ({"fields": LM, "delimiter": '"'}, ValueError),
        ({"fields": LM, "delimiter": "\n"}, ValueError),
    ],
)
def test_read_csv_bad_options_raise_when_iteration_starts(options, error):
    items = read_csv(b"text\na\n", **options)  # a generator: nothing raised yet
    with pytest.raises(error):
        next(items)


def test_read_csv_fields_may_be_lists():
    assert read("csv", b"text,category\na,b\n", fields=[["raw", "text"], ["label", "category"]]) == [
        {"line": 2, "item": 0, "raw": b"a", "label": "b"},
    ]


# ------------------------------------------------------------------------------- slash_tagged
def test_read_slash_tagged_valid_escapes_and_blank_lines():
    data = BOM + b"The/DT dog/NN barked/VBD ./.\r\n\r\n  \n1\\/2/CD a/b/NN  and/CC\t/CC/CC\n"
    assert read("slash_tagged", data) == [
        {"line": 1, "item": 0, "tokens": ["The", "dog", "barked", "."], "tags": ["DT", "NN", "VBD", "."]},
        {"line": 4, "item": 1, "tokens": ["1/2", "a/b", "and", "/CC"], "tags": ["CD", "NN", "CC", "CC"]},
    ]


def test_read_slash_tagged_rejections_keep_ordinals():
    data = (
        b"ok/NN\n"             # 1
        b"the/DT dog\n"        # 2: no slash
        b"\n"                  # 3
        b"the/DT /NN\n"        # 4: empty token
        b"dog/ ran/VBD\n"      # 5: empty tag
        b"a\\/b/NN c\\/d\n"    # 6: only an escaped slash: no tag
        b"caf\xe9/NN\n"        # 7: invalid UTF-8
        b"fine/JJ\n"           # 8
    )
    items = read("slash_tagged", data)
    assert rejections(items) == [
        (2, 1, MISSING_TAG), (4, 2, MISSING_FORM), (5, 3, MISSING_TAG), (6, 4, MISSING_TAG), (7, 5, INVALID_UTF8),
    ]
    details = [it["detail"] for it in items if "reject" in it]
    assert details == [
        "line 2: token 2 'dog' has no /TAG",
        "line 4: token 2 '/NN' is empty before its /TAG",
        "line 5: token 1 'dog/' has an empty tag",
        "line 6: token 2 'c\\\\/d' has no /TAG",
        "line 7: invalid UTF-8 at byte 3 of the line (invalid continuation byte)",
    ]
    assert items[1]["text"] == "the/DT dog"
    assert items[0] == {"line": 1, "item": 0, "tokens": ["ok"], "tags": ["NN"]}
    assert items[-1] == {"line": 8, "item": 6, "tokens": ["fine"], "tags": ["JJ"]}


def test_read_slash_tagged_rejects_at_the_first_bad_token_only():
    [item] = read("slash_tagged", b"/NN dog/ cat\n")
    assert (item["reject"], item["detail"]) == (MISSING_FORM, "line 1: token 1 '/NN' is empty before its /TAG")
    assert read("slash_tagged", b"") == [] and read("slash_tagged", b"\n \n") == []


# ------------------------------------------------------------------------------------ records
def test_read_records_percent_separator():
    data = (
        b"%\n"                # 1: a separator first: no empty item
        b"first line\n"       # 2
        b"second line\n"      # 3
        b"%\n"                # 4
        b"%\n"                # 5: consecutive separators: no empty item
        b"\n"                 # 6: leading blank line (trimmed)
        b"  \n"               # 7
        b"para one\n"         # 8
        b"\n"                 # 9: kept inside the record
        b"para two\n"         # 10
        b"\n"                 # 11: trailing blank line (trimmed)
        b"%   \t\n"           # 12: a separator with trailing whitespace
        b"\n"                 # 13: a blank-only record: no item
        b"%\n"                # 14
        b" %\n"               # 15: not a separator (leading space)
        b"%%\n"               # 16: not a separator
        b"%\n"                # 17: a trailing separator: no empty item
    )
    assert read("records", data) == [
        {"line": 2, "item": 0, "raw": b"first line\nsecond line"},
        {"line": 8, "item": 1, "raw": b"para one\n\npara two"},
        {"line": 15, "item": 2, "raw": b" %\n%%"},
    ]


def test_read_records_crlf_bom_no_final_newline_and_other_separator():
    assert read("records", BOM + b"a\r\nb\r\n%\r\nc") == [
        {"line": 1, "item": 0, "raw": b"a\nb"},
        {"line": 4, "item": 1, "raw": b"c"},
    ]
    assert read("records", b"x\n%\ny\n<|end|>\nz\n", separator="<|end|>") == [
        {"line": 1, "item": 0, "raw": b"x\n%\ny"},
        {"line": 5, "item": 1, "raw": b"z"},
    ]
    assert read("records", b"\xff\xfe\n%\n") == [{"line": 1, "item": 0, "raw": b"\xff\xfe"}]  # not decoded here
    assert read("records", b"") == [] and read("records", b"%\n\n%\n") == []


def test_read_records_paragraphs():
    data = b"\n\none\ntwo\n\n \t\n\nthree\n%\n\n\n"
    assert read("records", data, separator="") == [
        {"line": 3, "item": 0, "raw": b"one\ntwo"},
        {"line": 8, "item": 1, "raw": b"three\n%"},  # % is text here
    ]


@pytest.mark.parametrize("separator", [None, 1, b"%", "%\n", "\n", "a\rb", "% ", " ", "%\t"])
def test_read_records_bad_separator_raises_when_iteration_starts(separator):
    items = read_records(b"a\n", separator=separator)
    with pytest.raises(ValueError):
        next(items)


@pytest.mark.parametrize(
    "fmt, data, options, units",
    [
        ("csv", b"text,category\na,b\n\nshort\n", {"fields": CLASSIFY}, 2),
        ("slash_tagged", b"a/B\n\nc\n", {}, 2),
        ("records", b"a\n%\n\n%\nb\n", {}, 2),
    ],
)
def test_every_unit_is_accounted_for(fmt, data, options, units):
    assert len(read(fmt, data, **options)) == units
    assert list(READERS[fmt](data, **options)) == list(getattr(readers, f"read_{fmt}")(data, **options))

