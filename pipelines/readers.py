"""Readers: the raw bytes of one source file → its items, in file order.

Every reader is a generator function ``read_<format>(data: bytes, **options)`` registered in
:data:`READERS`. It never raises on bad *data* (bad *options* raise ``ValueError`` / ``TypeError``
when iteration starts) and it never drops input silently: every unit of input that is not blank and
not a comment becomes exactly one item, and every item is either an example or a rejection.

Item contract
-------------
Example::

    {"line": int, "item": int, ...format fields}

Rejection::

    {"line": int, "item": int, "reject": reason, "detail": str, "text": str}

``line``
    1-based line number. For an example, the line where the item starts; for a rejection, the
    first offending line of the item (the line named in ``detail``).
``item``
    0-based ordinal of the item in the file, counting rejections too, so that anything keyed on the
    position of an item (e.g. a split by position) is the same whether or not earlier items were
    rejected. Blank lines, comments and ``-DOCSTART-`` lines are not items and take no ordinal.
``reject``
    one of :data:`REJECT_REASONS` (module constants below).
``detail``
    human-readable; names the line and the column or field at fault.
``text``
    a preview of the raw item (all its lines, joined by ``\\n``), decoded with
    ``errors="backslashreplace"`` and cut to 2000 characters (plus a note of how many were cut), as
    in the prepare job's rejected records.

Line semantics
--------------
Those of :func:`pipelines.datasets.split_lines` (this module has its own copy,
:func:`split_lines`, so that it imports neither TensorFlow nor Beam): lines are separated by
``\\n``; one trailing ``\\r`` is removed (CRLF files); a UTF-8 byte-order mark at the start of the
file is removed; the empty string after a final ``\\n`` is not a line, and a file without a final
newline loses nothing. A line is *blank* when it holds only ASCII whitespace (space, tab, ``\\r``,
``\\v``, ``\\f``).

Formats
-------
``lines`` — :func:`read_lines`
    One item per line, blank lines included: ``{"raw": bytes}``, with ``item == line - 1``. Never
    rejects; decoding (and rejecting invalid UTF-8 or empty lines) happens downstream.

``conllu`` — :func:`read_conllu` (``tag_column="upos"`` or ``"xpos"``)
    CoNLL-U. A sentence is a run of non-blank lines; sentences are separated by one or more blank
    lines, and the last one needs no blank line after it. Lines starting with ``#`` are comments;
    a run of comment lines only is not an item. Word lines have 10 tab-separated columns: FORM is
    column 2, UPOS column 4, XPOS column 5. Multiword-token range lines (ID ``3-4``) and empty
    nodes (ID ``5.1``) are skipped; the words of a range come on the integer-ID lines after it.
    Example: ``{"tokens": [FORM, ...], "tags": [TAG, ...]}`` (strings, as in the file); its
    ``line`` is the sentence's first line (its first comment, if it has comments). The whole
    sentence is rejected, once, at its first bad line, for:

    * ``invalid_utf8``: a line (comments included) that is not valid UTF-8;
    * ``bad_columns``: a non-comment line without exactly 10 tab-separated columns;
    * ``bad_id``: an ID that is not an integer, a range (``3-4``) or an empty node (``5.1``);
    * ``missing_form``: a word whose FORM is empty;
    * ``missing_tag``: a word whose tag is ``_`` or empty;
    * ``empty``: no word line at all (only ranges and empty nodes).

``columns`` — :func:`read_columns` (``token_column=0, tag_column=-1, separator=None``)
    CoNLL-2003 style: one token per line, columns split by any run of whitespace
    (``separator=None``) or by the exact string ``separator`` (e.g. ``"\\t"``); sentences are
    separated by blank lines. Lines starting with ``-DOCSTART-`` are skipped (not items); there are
    no comments (``#`` is a token). Column indices may be negative (``-1`` = last column); equal
    indices are an option error. Example:
    ``{"tokens": [...], "tags": [...]}``; its ``line`` is the sentence's first token line. The
    whole sentence is rejected at its first bad line for:

    * ``invalid_utf8``: a line that is not valid UTF-8;
    * ``bad_columns``: a line with too few columns for ``token_column`` / ``tag_column``; a line
      without a separate tag column, i.e. where both indices resolve to the same column (with the
      default ``token_column=0, tag_column=-1``, any one-column line: its token is never taken for
      its own tag); or a line with a different number of columns from the sentence's first line;
    * ``missing_form`` / ``missing_tag``: an empty or whitespace-only token / tag (possible only
      with an explicit ``separator``).

``jsonl`` — :func:`read_jsonl` (``text_field="text", label_field="label", label_types="string"``)
    One JSON object per line; blank lines are skipped. Example:
    ``{"raw": text.encode("utf-8"), "label": str}``. With ``label_types="string"`` (the default,
    config ``reader.label_types``) the label must be a JSON string: ``1`` is not silently a class
    next to ``"1"``. With ``label_types="any"`` an integer becomes its decimal string (``1`` →
    ``"1"``) and a boolean ``"true"`` / ``"false"``; floats (no single spelling: ``1``, ``1.0``,
    ``1e0``), arrays, objects and ``null`` are still rejected. Other fields are ignored. Rejections:

    * ``invalid_utf8``: the line is not valid UTF-8 (inside a JSON string too: the whole line is
      decoded first; ``detail`` names the line and the byte offset in it);
    * ``bad_json``: not JSON, or JSON that is not an object;
    * ``missing_field``: the text or label field is absent (``detail`` names it);
    * ``bad_field``: the text is not a string, the label has a type not allowed above, or either holds
      a lone surrogate (``"\\ud800"``) that cannot be encoded as UTF-8;
    * ``missing_label``: the label is an empty or whitespace-only string.

``tsv`` — :func:`read_tsv`
    ``label<TAB>text`` per line, split at the first tab (the text may hold more tabs); blank lines
    are skipped. Example: ``{"raw": text bytes, "label": str}``. Only the label is decoded here;
    the text bytes stay raw and invalid UTF-8 in them is rejected downstream, like the ``lines``
    format's: the tokenizing step (``TokenizeBatchDoFn``) names the item's ``line`` and the byte
    offset in the text (``line 7: invalid UTF-8 at byte 12 of the text``). Rejections:
    ``bad_columns`` (no tab), ``missing_label`` (empty or whitespace-only label), ``invalid_utf8``
    (in the label).

``document`` — :func:`read_document` (``label``)
    The whole file is one example ``{"raw": data without its BOM, "label": label}`` with
    ``line == 1`` and ``item == 0``; line endings are kept. An empty or whitespace-only file is
    rejected as ``empty``.

``pairs`` — :func:`read_pairs`
    ``source<TAB>target`` per line, split at the first tab (the target may hold more tabs); blank
    lines are skipped. Example: ``{"raw": source bytes, "target_raw": target bytes, "group": str}``,
    where ``group`` is the source decoded with ``errors="backslashreplace"``: every pair of one
    source lands in one split. The texts stay bytes, decoded (and rejected if not UTF-8) by the
    tokenizing step. Rejection: ``bad_columns`` (no tab).

``cmudict`` — :func:`read_cmudict` (``remove_stress=False``)
    The CMU Pronouncing Dictionary (``cmudict.dict``): ``word PH1 PH2 ...`` per line; blank lines
    are skipped and a trailing comment ``# ...`` is removed. Example:
    ``{"raw": word bytes, "target_raw": phonemes bytes, "group": word}``; an alternate
    pronunciation ``word(2) ...`` is one more pair of the same word (``raw`` and ``group`` drop the
    ``(2)``, so all pronunciations of a word share a split). ``remove_stress`` strips the stress
    digits (``AH0`` → ``AH``). Rejections: ``invalid_utf8``; ``bad_columns`` (no word or no
    phonemes).

``csv`` — :func:`read_csv` (``fields``, ``delimiter=","``)
    CSV with a header row, RFC 4180 as read by the standard ``csv`` module in strict mode: fields
    may be quoted, ``""`` inside quotes is one ``"``, and quoted fields may hold the delimiter and
    line breaks (a line break inside a quoted field becomes ``\\n``, CRLF files included). The
    first non-blank record is the header (not an item); after it, every record is one item, and
    blank lines between records are skipped (not items; a line inside a quoted field is never
    blank). ``fields`` is a tuple of ``(item key, column name)`` pairs choosing the columns; the
    item keys are ``"raw"`` (text, yielded as UTF-8 bytes), ``"target_raw"`` (text, UTF-8 bytes)
    and ``"label"`` (``str``); with both ``raw`` and ``target_raw`` the example also has
    ``"group"``, the source text (``str``), as in ``pairs``. For example
    ``fields=(("raw", "text"), ("label", "category"))`` gives ``{"raw": bytes, "label": str}``. An
    empty ``fields``, an unknown or repeated item key, or a ``delimiter`` that is not one character
    (other than ``"``, ``\\r``, ``\\n``) is an option error. An example's ``line`` is the line where
    its record starts. The file is decoded line by line, so invalid UTF-8 spoils only the record
    holding it (an undecodable line is parsed with U+FFFD replacements, which are never a quote, a
    delimiter or a line break, so record boundaries stay where they are). Rejections:

    * ``bad_columns``: a record with a different number of fields from the header (``detail``
      gives both counts); a record that is not valid CSV (a character after a closing quote, a
      lone ``\\r`` in an unquoted field), which extends as far as the standard non-strict
      ``csv.reader`` reads it, reading going on with the next record; a quoted field still open at
      the end of the file (the record runs from its first line to the end: only here does reading
      stop early, as it must); every record after a header that is not valid CSV (a header that is
      not valid CSV is itself rejected, as item 0, so that the lines it spans are accounted for);
      every record, when a requested column appears more than once in the header;
    * ``missing_field``: every record, when the header lacks a requested column (``detail`` names
      it and lists the header's columns);
    * ``invalid_utf8``: a record with a line that is not valid UTF-8 (``line`` and ``detail`` name
      that line); every record, when the header is not valid UTF-8;
    * ``missing_label``: an empty or whitespace-only label.

    The ``csv`` module's process-wide ``csv.field_size_limit()`` (131,072 characters by default)
    is raised, never lowered, to the size of the file being read, so that no field is too long.

``slash_tagged`` — :func:`read_slash_tagged`
    One sentence per line of whitespace-separated ``token/TAG`` pairs (``The/DT dog/NN barked/VBD
    ./.``); blank lines are skipped. The tag follows the last ``/`` that is not escaped as ``\\/``;
    the token is what precedes it, with ``\\/`` unescaped to ``/`` (``1\\/2/CD`` → ``1/2``, ``CD``;
    ``a/b/NN`` → ``a/b``, ``NN``). Example: ``{"tokens": [...], "tags": [...]}`` (strings); its
    ``line`` is the sentence's line. The whole sentence is rejected, once, at its first bad token
    (``detail`` names the line, the token's 1-based number and its text) for:

    * ``invalid_utf8``: the line is not valid UTF-8;
    * ``missing_form``: an empty token (``/NN``);
    * ``missing_tag``: a token without an unescaped ``/`` (``dog``) or with an empty tag
      (``dog/``).

``records`` — :func:`read_records` (``separator="%"``)
    Record-separated text for language models: each record is one example ``{"raw": bytes}``, its
    lines joined by ``\\n`` (line endings normalised as in *Line semantics*); its ``line`` is the
    record's first line. With a non-empty ``separator`` (fortune-file style, ``%`` by default)
    records are separated by lines that are exactly ``separator`` once trailing whitespace is
    removed (``%  `` is a separator line, `` %`` is not); blank lines inside a record are part of
    it, but its leading and trailing blank lines are trimmed, and a record that is empty or blank
    (consecutive separators, a separator at the start or end of the file) is not an item. With
    ``separator=""`` records are paragraphs: runs of non-blank lines separated by one or more
    blank lines. A ``separator`` that is not a string, holds ``\\n`` or ``\\r`` or ends in
    whitespace (it could never match) is an option error. Never rejects: as for ``lines``, the
    tokenizing step decodes the text and rejects invalid UTF-8.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ------------------------------------------------------------------------------------ reasons
INVALID_UTF8 = "invalid_utf8"
BAD_COLUMNS = "bad_columns"
BAD_ID = "bad_id"
MISSING_FORM = "missing_form"
MISSING_TAG = "missing_tag"
BAD_JSON = "bad_json"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
MISSING_LABEL = "missing_label"
EMPTY = "empty"
REJECT_REASONS = (
    INVALID_UTF8, BAD_COLUMNS, BAD_ID, MISSING_FORM, MISSING_TAG, BAD_JSON, MISSING_FIELD, BAD_FIELD,
    MISSING_LABEL, EMPTY,
)

LABEL_TYPES = ("string", "any")  # read_jsonl's label_types
CSV_FIELDS = ("raw", "target_raw", "label")  # read_csv's item keys
PREVIEW_CHARS = 2000
CONLLU_COLUMNS = 10
CONLLU_TAG_COLUMNS = {"upos": 3, "xpos": 4}  # 0-based index of the tag column
DOCSTART = b"-DOCSTART-"
_BOM = b"\xef\xbb\xbf"
_WORD_ID = re.compile(r"[0-9]+")
_RANGE_ID = re.compile(r"[0-9]+-[0-9]+")
_EMPTY_NODE_ID = re.compile(r"[0-9]+\.[0-9]+")

Item = dict


# ------------------------------------------------------------------------------------ helpers
def split_lines(data: bytes) -> list[bytes]:
    """Same as :func:`pipelines.datasets.split_lines` (that module imports TensorFlow)."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def _reject(line: int, item: int, reason: str, detail: str, raw: bytes) -> Item:
    return {
        "line": line,
        "item": item,
        "reject": reason,
        "detail": detail,
        "text": _preview(raw.decode("utf-8", "backslashreplace")),
    }


def _utf8_detail(number: int, err: UnicodeDecodeError, where: str = "") -> str:
    return f"line {number}: invalid UTF-8{where} at byte {err.start} of the line ({err.reason})"


def _blocks(lines: list[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    """Runs of consecutive non-blank lines, as ``[(line_number, raw), ...]``."""
    block: list[tuple[int, bytes]] = []
    for number, raw in enumerate(lines, start=1):
        if _is_blank(raw):
            if block:
                yield block
                block = []
        else:
            block.append((number, raw))
    if block:
        yield block


def _joined(block: list[tuple[int, bytes]]) -> bytes:
    return b"\n".join(raw for _, raw in block)


def _tagged_sentences(blocks, parse) -> Iterator[Item]:
    """Examples ``{"tokens", "tags"}`` or rejections from sentence blocks; ``parse(block)`` returns
    ``(tokens, tags)`` or ``(line_number, reason, detail)``."""
    for item, block in enumerate(blocks):
        result = parse(block)
        if len(result) == 3:
            number, reason, detail = result
            yield _reject(number, item, reason, detail, _joined(block))
        else:
            tokens, tags = result
            yield {"line": block[0][0], "item": item, "tokens": tokens, "tags": tags}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -------------------------------------------------------------------------------------- lines
def read_lines(data: bytes) -> Iterator[Item]:
    """One example ``{"raw": bytes}`` per line (blank lines included); never rejects."""
    for index, raw in enumerate(split_lines(data)):
        yield {"line": index + 1, "item": index, "raw": raw}


# ------------------------------------------------------------------------------------- conllu
def _conllu_sentence(block, tag_index: int, tag_name: str):
    """``(tokens, tags)`` or ``(line, reason, detail)`` for one sentence block."""
    tokens: list[str] = []
    tags: list[str] = []
    for number, raw in block:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return number, INVALID_UTF8, _utf8_detail(number, err)
        if text.startswith("#"):
            continue
        columns = text.split("\t")
        if len(columns) != CONLLU_COLUMNS:
            return number, BAD_COLUMNS, (
                f"line {number}: {_plural(len(columns), 'tab-separated column')}, expected {CONLLU_COLUMNS}"
            )
        word_id = columns[0]
        if _RANGE_ID.fullmatch(word_id) or _EMPTY_NODE_ID.fullmatch(word_id):
            continue  # multiword-token range / empty node: its words (if any) come on integer-ID lines
        if not _WORD_ID.fullmatch(word_id):
            return number, BAD_ID, (
                f"line {number}: ID (column 1) {word_id!r} is not an integer, a range (3-4) or an empty node (5.1)"
            )
        form, tag = columns[1], columns[tag_index]
        if not form:
            return number, MISSING_FORM, f"line {number}: FORM (column 2) is empty"
        if tag in ("", "_"):
            return number, MISSING_TAG, (
                f"line {number}: {tag_name} (column {tag_index + 1}) is {tag!r} for FORM {form!r}"
            )
        tokens.append(form)
        tags.append(tag)
    if not tokens:
        number = next(n for n, raw in block if not raw.startswith(b"#"))
        return number, EMPTY, f"line {number}: sentence has no word line (only multiword ranges / empty nodes)"
    return tokens, tags


def read_conllu(data: bytes, tag_column: str = "upos") -> Iterator[Item]:
    """CoNLL-U sentences → ``{"tokens", "tags"}`` (``tag_column``: ``"upos"`` or ``"xpos"``)."""
    if tag_column not in CONLLU_TAG_COLUMNS:
        raise ValueError(f"tag_column must be one of {sorted(CONLLU_TAG_COLUMNS)}, got {tag_column!r}")
    tag_index = CONLLU_TAG_COLUMNS[tag_column]
    # a block of comments only is not a sentence
    blocks = (b for b in _blocks(split_lines(data)) if not all(raw.startswith(b"#") for _, raw in b))
    yield from _tagged_sentences(blocks, lambda block: _conllu_sentence(block, tag_index, tag_column.upper()))


# ------------------------------------------------------------------------------------ columns
def _columns_sentence(block, token_column: int, tag_column: int, separator: str | None):
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    for number, raw in block:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return number, INVALID_UTF8, _utf8_detail(number, err)
        columns = text.split(separator)
        n = len(columns)
        for name, index in (("token_column", token_column), ("tag_column", tag_column)):
            if not -n <= index < n:
                return number, BAD_COLUMNS, f"line {number}: {_plural(n, 'column')}, too few for {name}={index}"
        if token_column % n == tag_column % n:  # e.g. one column: 0 and -1 are the same column
            return number, BAD_COLUMNS, (
                f"line {number}: {_plural(n, 'column')}, no separate tag column (token_column={token_column} and "
                f"tag_column={tag_column} are both column {token_column % n})"
            )
        if width is None:
            width = n
        elif n != width:
            return number, BAD_COLUMNS, (
                f"line {number}: {_plural(n, 'column')}, but the sentence's first line (line {block[0][0]}) has {width}"
            )
        token, tag = columns[token_column], columns[tag_column]
        if not token.strip():
            return number, MISSING_FORM, f"line {number}: token (column {token_column}) is empty"
        if not tag.strip():
            return number, MISSING_TAG, f"line {number}: tag (column {tag_column}) is empty"
        tokens.append(token)
        tags.append(tag)
    return tokens, tags


def read_columns(
    data: bytes, token_column: int = 0, tag_column: int = -1, separator: str | None = None
) -> Iterator[Item]:
    """CoNLL-2003-style column files → ``{"tokens", "tags"}`` per sentence."""
    for name, value in (("token_column", token_column), ("tag_column", tag_column)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if token_column == tag_column:
        raise ValueError(f"token_column and tag_column must differ, both are {token_column}")
    if separator is not None and (not isinstance(separator, str) or not separator):
        raise ValueError(f"separator must be None or a non-empty string, got {separator!r}")
    blocks = ([(n, raw) for n, raw in b if not raw.startswith(DOCSTART)] for b in _blocks(split_lines(data)))
    yield from _tagged_sentences(
        (b for b in blocks if b), lambda block: _columns_sentence(block, token_column, tag_column, separator)
    )


# -------------------------------------------------------------------------------------- jsonl
def _type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _jsonl_line(number: int, raw: bytes, text_field: str, label_field: str, label_types: str):
    """``(raw_text, label)`` or ``(reason, detail)``."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return INVALID_UTF8, _utf8_detail(number, err)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return BAD_JSON, f"line {number}: not JSON ({err.msg} at column {err.colno})"
    except RecursionError:
        return BAD_JSON, f"line {number}: not JSON (nested too deeply)"
    if not isinstance(obj, dict):
        return BAD_JSON, f"line {number}: expected a JSON object, got {_type_name(obj)}"
    for field in (text_field, label_field):
        if field not in obj:
            return MISSING_FIELD, f"line {number}: no field {field!r}"
    text, label = obj[text_field], obj[label_field]
    if not isinstance(text, str):
        return BAD_FIELD, f"line {number}: field {text_field!r} is {_type_name(text)}, expected a string"
    if label_types == "string" and not isinstance(label, str):
        return BAD_FIELD, (
            f"line {number}: field {label_field!r} is {_type_name(label)}, expected a string "
            f"(or set reader.label_types: any)"
        )
    if isinstance(label, bool):
        label = "true" if label else "false"  # JSON's spelling, not Python's
    elif isinstance(label, int):
        label = str(label)
    elif not isinstance(label, str):
        why = " (a float has no single spelling: 1, 1.0 and 1e0 are one number)" if isinstance(label, float) else ""
        return BAD_FIELD, (
            f"line {number}: field {label_field!r} is {_type_name(label)}, expected a string, an integer or a "
            f"boolean{why}"
        )
    for field, value in ((text_field, text), (label_field, label)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return BAD_FIELD, f"line {number}: field {field!r} holds a lone surrogate at character {err.start}"
    if not label.strip():
        return MISSING_LABEL, f"line {number}: field {label_field!r} is empty"
    return text.encode("utf-8"), label


def read_jsonl(
    data: bytes, text_field: str = "text", label_field: str = "label", label_types: str = "string"
) -> Iterator[Item]:
    """JSON lines → ``{"raw": text bytes, "label": str}``; blank lines skipped.

    ``label_types``: ``"string"`` (only string labels) or ``"any"`` (also integers and booleans).
    """
    if label_types not in LABEL_TYPES:
        raise ValueError(f"label_types must be one of {LABEL_TYPES}, got {label_types!r}")
    item = 0
    for number, raw in enumerate(split_lines(data), start=1):
        if _is_blank(raw):
            continue
        first, second = _jsonl_line(number, raw, text_field, label_field, label_types)
        if isinstance(first, bytes):
            yield {"line": number, "item": item, "raw": first, "label": second}
        else:
            yield _reject(number, item, first, second, raw)
        item += 1


# ---------------------------------------------------------------------------------------- tsv
def _tab_lines(data: bytes, what: str):
    """``(number, item, left, right, raw)`` for each non-blank line split at its first tab, or a
    ``bad_columns`` rejection naming ``what`` (e.g. ``"label and text"``) for a line without one."""
    item = 0
    for number, raw in enumerate(split_lines(data), start=1):
        if _is_blank(raw):
            continue
        left, tab, right = raw.partition(b"\t")
        if tab:
            yield number, item, left, right, raw
        else:
            yield _reject(number, item, BAD_COLUMNS, f"line {number}: no tab between {what}", raw)
        item += 1


def read_tsv(data: bytes) -> Iterator[Item]:
    """``label<TAB>text`` lines → ``{"raw": text bytes, "label": str}``; blank lines skipped."""
    for line in _tab_lines(data, "label and text"):
        if isinstance(line, dict):
            yield line
            continue
        number, item, label_bytes, text, raw = line
        try:
            label = label_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _reject(number, item, INVALID_UTF8, _utf8_detail(number, err, " in the label (column 1)"), raw)
        else:
            if not label.strip():
                yield _reject(number, item, MISSING_LABEL, f"line {number}: label (column 1) is empty", raw)
            else:
                yield {"line": number, "item": item, "raw": text, "label": label}


# ----------------------------------------------------------------------------------- document
def read_document(data: bytes, label) -> Iterator[Item]:
    """The whole file → one example ``{"raw", "label"}`` (``label``: a non-empty string or an int)."""
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise TypeError(f"label must be a string or an integer, got {label!r}")
    label = str(label)
    if not label.strip():
        raise ValueError("label must not be empty")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if _is_blank(data):
        yield _reject(1, 0, EMPTY, "line 1: the file is empty or holds only whitespace", data)
    else:
        yield {"line": 1, "item": 0, "raw": data, "label": label}


# -------------------------------------------------------------------------------------- pairs
def read_pairs(data: bytes) -> Iterator[Item]:
    """``source<TAB>target`` lines → ``{"raw": source bytes, "target_raw": target bytes, "group": source}``.

    Split at the first tab; blank lines skipped; a line without a tab is ``bad_columns``. The texts
    stay bytes (decoded, and rejected if not UTF-8, by the tokenizing step). ``group`` (the source
    text) keeps every pair of one source in one split.
    """
    for line in _tab_lines(data, "source and target"):
        if isinstance(line, dict):
            yield line
            continue
        number, item, source, target, _ = line
        group = source.decode("utf-8", "backslashreplace")
        yield {"line": number, "item": item, "raw": source, "target_raw": target, "group": group}


_STRESS = re.compile(r"(?<=[A-Z])[0-2]\b")
_VARIANT = re.compile(r"\([0-9]+\)$")


def read_cmudict(data: bytes, remove_stress: bool = False) -> Iterator[Item]:
    """The CMU Pronouncing Dictionary (``cmudict.dict``): ``word PH1 PH2 ...`` per line.

    Alternate pronunciations ``word(2) ...`` are extra pairs of the same word (``group`` is the
    word without the ``(N)``, so all of a word's pronunciations land in one split); a trailing
    comment ``# ...`` is removed; ``remove_stress`` strips the stress digits (``AH0`` → ``AH``).
    Yields ``{"raw": word bytes, "target_raw": phonemes bytes, "group": word}``.
    """
    item = 0
    for number, raw in enumerate(split_lines(data), start=1):
        if _is_blank(raw):
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _reject(number, item, INVALID_UTF8, _utf8_detail(number, err), raw)
            item += 1
            continue
        line = line.split("#", 1)[0].strip()
        word, _, phones = line.partition(" ")
        phones = " ".join(phones.split())
        if not word or not phones:
            yield _reject(number, item, BAD_COLUMNS, f"line {number}: expected a word and its phonemes", raw)
        else:
            if remove_stress:
                phones = _STRESS.sub("", phones)
            group = _VARIANT.sub("", word)
            yield {"line": number, "item": item, "raw": group.encode("utf-8"), "target_raw": phones.encode("utf-8"),
                   "group": group}
        item += 1


# ---------------------------------------------------------------------------------------- csv
def _csv_fields(fields) -> list[tuple[str, str]]:
    """``fields`` checked: ``[(item key, column name), ...]``."""
    if isinstance(fields, (str, bytes)) or not isinstance(fields, (tuple, list)):
        raise TypeError(f"fields must be a tuple of (item key, column name) pairs, got {fields!r}")
    pairs = []
    for pair in fields:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"fields must be a tuple of (item key, column name) pairs, got {pair!r} in it")
        key, column = pair
        if key not in CSV_FIELDS:
            raise ValueError(f"fields: item key must be one of {CSV_FIELDS}, got {key!r}")
        if not isinstance(column, str):
            raise TypeError(f"fields: column name for {key!r} must be a string, got {column!r}")
        if key in (k for k, _ in pairs):
            raise ValueError(f"fields: item key {key!r} given twice")
        pairs.append((key, column))
    if not pairs:
        raise ValueError("fields must name at least one (item key, column name) pair")
    return pairs


def _csv_records(lines: list[bytes], delimiter: str):
    """``(lines, row, bad_utf8)`` per CSV record: the record's ``[(line_number, raw), ...]``; its
    fields (``list[str]``), or why it is not valid CSV (``str``); and ``[(line_number, detail)]``
    for its lines that are not valid UTF-8."""
    consumed: list[tuple[int, bytes]] = []
    texts: list[str] = []
    bad: list[tuple[int, str]] = []
    at_end = []  # non-empty once every line has been read

    def feed():
        for number, raw in enumerate(lines, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((number, _utf8_detail(number, err)))
                text = raw.decode("utf-8", "replace")  # U+FFFD: never a quote, a delimiter or a line break
            consumed.append((number, raw))
            texts.append(text + "\n")
            yield texts[-1]
        at_end.append(True)

    source = feed()
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    while True:
        consumed.clear()
        texts.clear()
        bad.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if at_end:
                row = f"quoted field not closed at the end of the file (line {consumed[-1][0]})"
            else:
                row = f"not valid CSV at line {consumed[-1][0]} ({err})"
                # the record ends where the standard (non-strict) reader ends it; reading goes on after it
                try:
                    next(csv.reader(itertools.chain(list(texts), source), delimiter=delimiter))
                except (StopIteration, csv.Error):
                    pass
        yield list(consumed), row, list(bad)


def _csv_columns(header, bad: list, number: int, pairs: list[tuple[str, str]]):
    """``{item key: column index}`` for the header row, or ``(reason, why)`` every record is rejected for."""
    if isinstance(header, str):
        return BAD_COLUMNS, f"the header (line {number}) is not valid CSV"
    if bad:
        return INVALID_UTF8, f"the header is not valid UTF-8 ({bad[0][1]})"
    wanted = list(dict.fromkeys(column for _, column in pairs))
    missing = [column for column in wanted if column not in header]
    if missing:
        return MISSING_FIELD, (
            f"no column {', '.join(map(repr, missing))} in the header (line {number}: columns "
            f"{', '.join(map(repr, header))})"
        )
    for column in wanted:
        if header.count(column) > 1:
            return BAD_COLUMNS, f"column {column!r} appears {header.count(column)} times in the header (line {number})"
    return {key: header.index(column) for key, column in pairs}


def read_csv(data: bytes, fields, delimiter: str = ",") -> Iterator[Item]:
    """CSV with a header row → one item per record, ``fields`` = ``((item key, column name), ...)``.

    Item keys: ``"raw"`` / ``"target_raw"`` (text as UTF-8 bytes), ``"label"`` (``str``); with both
    ``raw`` and ``target_raw`` the example also has ``"group"`` (the source text).
    """
    pairs = _csv_fields(fields)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValueError(f"delimiter must be one character other than '\"', '\\r' and '\\n', got {delimiter!r}")
    if csv.field_size_limit() < len(data):
        csv.field_size_limit(len(data))  # a field can be no longer than the file
    columns = header = header_line = None
    item = 0
    for record, row, bad in _csv_records(split_lines(data), delimiter):
        start = record[0][0]
        raw = _joined(record)
        if isinstance(row, list) and len(record) == 1 and _is_blank(record[0][1]):
            continue
        if columns is None:  # the header
            header, header_line = row, start
            columns = _csv_columns(row, bad, start, pairs)
            if isinstance(row, str):  # not an item, unless it is unreadable: the lines it spans must show
                yield _reject(start, item, BAD_COLUMNS, f"line {start}: the header row: {row}", raw)
                item += 1
            continue
        if isinstance(row, str):
            yield _reject(start, item, BAD_COLUMNS, f"line {start}: {row}", raw)
        elif isinstance(columns, tuple):
            reason, why = columns
            yield _reject(start, item, reason, f"line {start}: {why}", raw)
        elif bad:
            number, detail = bad[0]
            yield _reject(number, item, INVALID_UTF8, detail, raw)
        elif len(row) != len(header):
            yield _reject(start, item, BAD_COLUMNS, (
                f"line {start}: {_plural(len(row), 'field')}, but the header (line {header_line}) has {len(header)}"
            ), raw)
        else:
            values = {key: row[index] for key, index in columns.items()}
            label = values.get("label")
            if label is not None and not label.strip():
                column = dict(pairs)["label"]
                yield _reject(start, item, MISSING_LABEL, f"line {start}: label (column {column!r}) is empty", raw)
            else:
                example: Item = {"line": start, "item": item}
                for key, value in values.items():
                    example[key] = value if key == "label" else value.encode("utf-8")
                if "raw" in values and "target_raw" in values:
                    example["group"] = values["raw"]
                yield example
        item += 1


# ------------------------------------------------------------------------------- slash_tagged
_SLASH_TAG = re.compile(r"(.*)(?<!\\)/(.*)", re.DOTALL)  # greedy: the last unescaped "/"


def _slash_tagged_sentence(block):
    """``(tokens, tags)`` or ``(line, reason, detail)`` for one line of ``token/TAG`` pairs."""
    [(number, raw)] = block
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return number, INVALID_UTF8, _utf8_detail(number, err)
    tokens: list[str] = []
    tags: list[str] = []
    for index, pair in enumerate(text.split(), start=1):
        match = _SLASH_TAG.fullmatch(pair)
        if match is None:
            return number, MISSING_TAG, f"line {number}: token {index} {pair!r} has no /TAG"
        token, tag = match.group(1).replace("\\/", "/"), match.group(2)
        if not token:
            return number, MISSING_FORM, f"line {number}: token {index} {pair!r} is empty before its /TAG"
        if not tag:
            return number, MISSING_TAG, f"line {number}: token {index} {pair!r} has an empty tag"
        tokens.append(token)
        tags.append(tag)
    return tokens, tags


def read_slash_tagged(data: bytes) -> Iterator[Item]:
    """``token/TAG token/TAG ...`` lines → ``{"tokens", "tags"}`` per line; blank lines skipped."""
    blocks = ([(number, raw)] for number, raw in enumerate(split_lines(data), start=1) if not _is_blank(raw))
    yield from _tagged_sentences(blocks, _slash_tagged_sentence)


# ------------------------------------------------------------------------------------ records
def _separated(lines: list[bytes], separator: bytes) -> Iterator[list[tuple[int, bytes]]]:
    """Records between separator lines, as ``[(line_number, raw), ...]``, leading and trailing
    blank lines trimmed; empty records left out."""
    record: list[tuple[int, bytes]] = []
    for number, raw in itertools.chain(enumerate(lines, start=1), [(None, separator)]):
        if raw.rstrip() != separator:
            record.append((number, raw))
            continue
        content = [i for i, (_, line) in enumerate(record) if not _is_blank(line)]
        if content:
            yield record[content[0] : content[-1] + 1]
        record = []


def read_records(data: bytes, separator: str = "%") -> Iterator[Item]:
    """Records separated by ``separator`` lines (``""``: by blank lines) → ``{"raw": bytes}``."""
    if not isinstance(separator, str) or "\n" in separator or "\r" in separator:
        raise ValueError(f"separator must be a string without line breaks, got {separator!r}")
    marker = separator.encode("utf-8")
    if marker.rstrip() != marker:
        raise ValueError(f"separator must not end in whitespace (lines are compared without it), got {separator!r}")
    lines = split_lines(data)
    records = _blocks(lines) if not marker else _separated(lines, marker)
    for item, record in enumerate(records):
        yield {"line": record[0][0], "item": item, "raw": _joined(record)}


READERS: dict[str, Callable[..., Iterator[Item]]] = {
    "pairs": read_pairs,
    "cmudict": read_cmudict,
    "lines": read_lines,
    "conllu": read_conllu,
    "columns": read_columns,
    "jsonl": read_jsonl,
    "tsv": read_tsv,
    "document": read_document,
    "csv": read_csv,
    "slash_tagged": read_slash_tagged,
    "records": read_records,
}


# ------------------------------------------------------------------------- formats and options
# What a format's items provide, as the roles a task reads (``pipelines.tasks.base.ROLES``):
# ``text`` (``raw`` bytes or ``tokens``), ``tags`` (one per token), ``label`` (one per item),
# ``target`` (``target_raw``: the other side of a pair).
TEXT, TAGS, LABEL, TARGET = "text", "tags", "label", "target"



class ReaderConfig(BaseModel):
    """``data.reader``: how the file formats are read (each option names the formats it applies to)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    conllu_tag: Literal["upos", "xpos"] = Field("upos", description="CoNLL-U: the tag column")
    token_column: int = Field(0, description="column files: index of the token column")
    tag_column: int = Field(-1, description="column files: index of the tag column (negative counts from the end)")
    separator: str | None = Field(None, description="column files: column separator (None: any whitespace)")
    text_field: str = Field("text", description="JSONL, CSV: the text field / column")
    label_field: str = Field("label", description="JSONL, CSV: the label field / column")
    label_types: Literal["string", "any"] = Field(
        "string", description="JSONL: 'string': a label must be a JSON string (else bad_field); 'any': integers and "
        "booleans become their JSON spelling (1 -> '1', true -> 'true'); floats, arrays, objects, null: bad_field"
    )
    source_field: str | None = Field(None, description="CSV pairs: the source column (default: text_field)")
    target_field: str | None = Field(None, description="CSV pairs: the target column (set it for seq2seq)")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV: the field delimiter")
    record_separator: str = Field(
        "%", description="records: a line holding only this separates records; '' = blank lines (paragraphs)")

    @model_validator(mode="after")
    def _distinct_columns(self) -> "ReaderConfig":
        if self.token_column == self.tag_column:
            raise ValueError(f"token_column and tag_column must differ, both are {self.token_column}")
        if "\n" in self.record_separator or "\r" in self.record_separator \
                or self.record_separator != self.record_separator.rstrip():
            raise ValueError(f"record_separator must be one line without trailing whitespace, got "
                             f"{self.record_separator!r}")
        return self


def _csv_provides(reader: ReaderConfig) -> frozenset[str]:
    return frozenset({TEXT, TARGET}) if reader.target_field else frozenset({TEXT, LABEL})


def _csv_options(reader: ReaderConfig, reads: frozenset[str], data) -> dict:
    if TARGET in reads:
        fields = (("raw", reader.source_field or reader.text_field), ("target_raw", reader.target_field))
    else:
        fields = (("raw", reader.text_field),) + ((("label", reader.label_field),) if LABEL in reads else ())
    return {"fields": fields, "delimiter": reader.delimiter}


@dataclass(frozen=True)
class Format:
    """A registered format: its reader, the roles its items provide (a set, or a function of the
    :class:`ReaderConfig`), how the reader's keyword options come from the data config
    (``options(reader, roles the task reads, data config)``), and whether it reads ``data.files``
    (then the format's name is also a ``data.dataset``)."""

    read: Callable[..., Iterator[Item]]
    provides: frozenset[str] | Callable[[ReaderConfig], frozenset[str]]
    options: Callable[[ReaderConfig, frozenset[str], Any], dict] = lambda reader, reads, data: {}
    files: bool = True

    def roles(self, reader: ReaderConfig) -> frozenset[str]:
        return self.provides(reader) if callable(self.provides) else frozenset(self.provides)


FORMATS: dict[str, Format] = {
    "lines": Format(read_lines, frozenset({TEXT})),
    "records": Format(read_records, frozenset({TEXT}), lambda r, reads, d: {"separator": r.record_separator}),
    "conllu": Format(read_conllu, frozenset({TEXT, TAGS}), lambda r, reads, d: {"tag_column": r.conllu_tag}),
    "columns": Format(read_columns, frozenset({TEXT, TAGS}), lambda r, reads, d: {
        "token_column": r.token_column, "tag_column": r.tag_column, "separator": r.separator}),
    "slash_tagged": Format(read_slash_tagged, frozenset({TEXT, TAGS})),
    "jsonl": Format(read_jsonl, frozenset({TEXT, LABEL}), lambda r, reads, d: {
        "text_field": r.text_field, "label_field": r.label_field, "label_types": r.label_types}),
    "tsv": Format(read_tsv, frozenset({TEXT, LABEL})),
    "csv": Format(read_csv, _csv_provides, _csv_options),
    "document": Format(read_document, frozenset({TEXT, LABEL}), files=False),  # class folders (dataset "folder")
    "pairs": Format(read_pairs, frozenset({TEXT, TARGET})),
    "cmudict": Format(read_cmudict, frozenset({TEXT, TARGET}), lambda r, reads, d: {"remove_stress": d.remove_stress},
                      files=False),
}
