"""Token vocabulary: reserved ids first, then tokens by descending count (ties by token).

The vocabulary file (``vocab/tokens.txt`` in a prepared data directory) holds one token per line,
UTF-8, ``\\n``-separated; the line number (0-based) is the id. Reserved tokens come first:
``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.

A corpus that already contains one of the reserved strings (Penn Treebank has ``<unk>``) maps it to
the reserved id: the reserved tokens are never counted as ordinary tokens.

Example:

>>> vocab = Vocabulary.from_counts({"the": 3, "cat": 1}, max_size=5)
>>> vocab.tokens
['<pad>', '<unk>', '<bos>', '<eos>', 'the']
>>> vocab.encode(["the", "cat"])
[4, 1]
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import tensorflow as tf

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
RESERVED_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def _entries_bytes(entries: Sequence[str]) -> bytes:
    """One entry per line, UTF-8, ``\\n`` line ends: the bytes of a vocabulary or label file."""
    return "".join(e + "\n" for e in entries).encode("utf-8")


def _load_entries(cls, path: str | os.PathLike, what: str):
    """``cls(entries)`` from a file written by :func:`_entries_bytes`; errors name the file."""
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no such {what} file")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: {what} file is not valid UTF-8 ({err})") from None
    if text.endswith("\n"):
        text = text[:-1]
    # split("\n"), not splitlines(): a character vocabulary may hold \r, \x0b, \u2028, ... tokens.
    try:
        return cls(text.split("\n") if text else [])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


class Vocabulary:
    """A fixed token ↔ id mapping.

    Args:
        tokens: every token in id order; must start with ``RESERVED_TOKENS`` and hold no duplicates
            and no token containing a newline.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise ValueError(
                f"a vocabulary must start with the reserved tokens {list(RESERVED_TOKENS)}, "
                f"got {tokens[: len(RESERVED_TOKENS)]}"
            )
        index: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str) or token == "":
                raise ValueError(f"vocabulary entry {i} is not a non-empty string: {token!r}")
            if "\n" in token:
                raise ValueError(f"vocabulary entry {i} contains a newline: {token!r}")
            if token in index:
                raise ValueError(f"vocabulary token {token!r} appears twice (ids {index[token]} and {i})")
            index[token] = i
        self._tokens = tokens
        self._index = index

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int] | Iterable[tuple[str, int]],
        max_size: int | None = None,
        min_count: int = 1,
    ) -> "Vocabulary":
        """Builds a vocabulary from token counts.

        Args:
            counts: mapping (or pairs) token → count. Reserved tokens in it are ignored (they already
                have their ids). Pairs for the same token are summed.
            max_size: the largest vocabulary, reserved tokens included (``None``: no limit).
            min_count: tokens seen fewer times are left out (they will encode as ``<unk>``).

        Order: reserved tokens, then by descending count, ties broken by the token string (code
        point order), so the result does not depend on the order of ``counts``.
        """
        if max_size is not None and max_size < len(RESERVED_TOKENS):
            raise ValueError(f"max_size must be at least {len(RESERVED_TOKENS)} (the reserved tokens), got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        items = counts.items() if isinstance(counts, Mapping) else counts
        totals: dict[str, int] = {}
        for token, count in items:
            if token in RESERVED_TOKENS or token == "":
                continue
            totals[token] = totals.get(token, 0) + int(count)
        ranked = sorted((t for t, c in totals.items() if c >= min_count), key=lambda t: (-totals[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - len(RESERVED_TOKENS)]
        return cls(list(RESERVED_TOKENS) + ranked)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Reads a vocabulary file (one token per line, UTF-8); any ``tf.io.gfile`` path works."""
        return _load_entries(cls, path, "vocabulary")

    def save(self, path: str | os.PathLike) -> None:
        """Writes one token per line, UTF-8, ``\\n`` line ends (creates parent directories)."""
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            tf.io.gfile.makedirs(parent)
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(self.to_bytes())

    def to_bytes(self) -> bytes:
        return _entries_bytes(self._tokens)

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(tuple(self._tokens))

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def token_to_id(self, token: str) -> int:
        return self._index.get(token, UNK_ID)

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= int(token_id) < len(self._tokens):
            raise ValueError(f"id {token_id} is outside the vocabulary (size {len(self)})")
        return self._tokens[int(token_id)]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token strings → ids; unknown tokens → ``UNK_ID``."""
        get = self._index.get
        return [get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids → token strings; an id outside the vocabulary is an error."""
        return [self.id_to_token(i) for i in ids]

    def lookup_table(self) -> tf.lookup.StaticHashTable:
        """A ``tf.string`` → ``tf.int64`` table with the same mapping as :meth:`encode` (default ``UNK_ID``)."""
        initializer = tf.lookup.KeyValueTensorInitializer(
            keys=tf.constant(self._tokens, dtype=tf.string),
            values=tf.range(len(self._tokens), dtype=tf.int64),
        )
        return tf.lookup.StaticHashTable(initializer, default_value=tf.constant(UNK_ID, tf.int64))


class LabelSet:
    """The closed set of output labels (tags of a tagger, classes of a classifier): ids ``0..n-1``.

    No reserved entries and no unknown label: a label outside the set is an error (the prepare job
    sends such records to ``rejected/``), never a silent remap. Stored like a :class:`Vocabulary`
    (``vocab/tags.txt`` or ``vocab/labels.txt``, one label per line, the line number is the id),
    sorted by name so that ids do not depend on counts.

    Example:

    >>> labels = LabelSet.from_labels(["NOUN", "VERB", "NOUN"])
    >>> labels.encode(["VERB", "NOUN"]), len(labels)
    ([1, 0], 2)
    """

    def __init__(self, labels: Sequence[str]):
        labels = list(labels)
        if not labels:
            raise ValueError("a label set needs at least one label")
        if len(set(labels)) != len(labels):
            dupes = sorted({x for x in labels if labels.count(x) > 1})
            raise ValueError(f"duplicate labels {dupes[:5]}")
        bad = [x for x in labels if not x or "\n" in x]
        if bad:
            raise ValueError(f"labels must be non-empty single-line strings, got {bad[:5]!r}")
        self._labels = labels
        self._index = {x: i for i, x in enumerate(labels)}

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "LabelSet":
        return cls(sorted(set(labels)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelSet":
        """Reads a label file (one label per line, UTF-8); any ``tf.io.gfile`` path works."""
        return _load_entries(cls, path, "label")

    def to_bytes(self) -> bytes:
        return _entries_bytes(self._labels)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self._labels == other._labels

    def __hash__(self) -> int:
        return hash(tuple(self._labels))

    def __repr__(self) -> str:
        return f"LabelSet({self._labels!r})" if len(self) <= 10 else f"LabelSet(size={len(self)})"

    def unknown(self, labels: Iterable[str]) -> list[str]:
        """The labels of ``labels`` that are not in the set, in order of first appearance."""
        seen: dict[str, None] = {}
        for x in labels:
            if x not in self._index:
                seen.setdefault(x)
        return list(seen)

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Labels → ids; raises ``KeyError`` naming the first unknown label."""
        try:
            return [self._index[x] for x in labels]
        except KeyError as err:
            raise KeyError(f"unknown label {err.args[0]!r} (known: {self._labels[:20]})") from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self._labels[int(i)] for i in ids]
