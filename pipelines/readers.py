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
"""

from __future__ import annotations

import json
import re
from typing import Callable, Iterator

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


READERS: dict[str, Callable[..., Iterator[Item]]] = {
    "pairs": read_pairs,
    "cmudict": read_cmudict,
    "lines": read_lines,
    "conllu": read_conllu,
    "columns": read_columns,
    "jsonl": read_jsonl,
    "tsv": read_tsv,
    "document": read_document,
}
