"""Per-item sufficient statistics of an evaluation: what a paired comparison of two models needs.

An evaluator of :mod:`keras_models.evaluation` sums sufficient statistics over a split's items; with
``score_items`` it also returns them item by item, as :class:`ItemStats`: one content key per item
and, per statistic name, an ``[n_items, k]`` array in the layout of its score in
:data:`keras_models.bootstrap.SCORES`. The column sums give exactly the evaluator's figures
(``ItemStats.score``). A registered model version stores its ItemStats (:meth:`ItemStats.save`:
one ``.npz``), so that a later candidate can be compared with the champion item by item
(:func:`keras_models.bootstrap.pair_items`, :func:`~keras_models.bootstrap.paired_bootstrap`).

Items: sentences (language models: the ids up to and including each ``<eos>`` of the split's
stream; taggers), documents (classifiers), sources with all their references (seq2seq: what its
error rates count).

Keys (:func:`item_key`): the sha1 of the item's content as strings, the task's name, its tokens
(through the vocabulary) and its gold labels / targets, so the same item gets the same key in two
prepared datasets with different vocabularies as long as its tokens are in both (an
out-of-vocabulary token reads ``<unk>``, and then the keys differ and the item is not paired). Keys
repeat when an item does (the same sentence twice); pairing matches occurrences in order.

Statistic names are score names (``accuracy``, ``f1``, ``perplexity``, ...) or score names after a
variant prefix (``beam5_wer``: the beam search's WER; :func:`~keras_models.bootstrap.resolve_score`).

The ``.npz`` file (format version :data:`FORMAT_VERSION`) comes back from a registry, so it is not
trusted: :meth:`ItemStats.load` reads it without pickles and checks every member (names, shapes,
dtypes, values) before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from keras_models.bootstrap import resolve_score

__all__ = ["FORMAT_VERSION", "ItemStats", "item_key"]

FORMAT_VERSION = 1
_KEYS, _VERSION, _STATS = "keys", "format_version", "stats_"


def item_key(kind: str, tokens, *gold) -> str:
    """The content key of one item: sha1 (hex) of ``[kind, tokens, *gold]`` as compact JSON, every
    part strings (or lists of strings); ``kind`` tells items of different evaluators apart (their
    ``ITEM_KIND``)."""
    text = json.dumps([kind, list(tokens), *gold], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _problem(keys, stats: dict) -> str | None:
    """What is wrong with these keys and statistics, or None."""
    if not isinstance(keys, np.ndarray) or keys.ndim != 1 or keys.dtype.kind != "U":
        return f"keys must be a 1-D array of str, got {getattr(keys, 'dtype', type(keys))} " \
               f"of shape {getattr(keys, 'shape', None)}"
    for name, arr in stats.items():
        if not isinstance(name, str) or not name:
            return f"statistic names must be non-empty strings, got {name!r}"
        try:
            score = resolve_score(name)
        except ValueError as e:
            return str(e)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
            return f"statistics {name!r} must be a numeric array, got {getattr(arr, 'dtype', type(arr))}"
        if arr.ndim != 2 or arr.shape[0] != keys.shape[0]:
            return f"statistics {name!r} must have shape [{keys.shape[0]} items, k], got {arr.shape}"
        width = score.check_width(arr.shape[1])
        if width:
            return f"statistics {name!r}: {width}"
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            return f"statistics {name!r} hold negative, NaN or infinite values"
    return None


@dataclass(frozen=True)
class ItemStats:
    """Per-item statistics of one split.

    Args:
        keys: ``[n]`` str, one content key per item (:func:`item_key`), in corpus order.
        stats: statistic name → ``[n, k]`` float64 in its score's layout
            (:data:`keras_models.bootstrap.SCORES`).

    Example:
        >>> items = ItemStats(np.array(["a", "b"]), {"accuracy": np.array([[1.0, 1.0], [0.0, 1.0]])})
        >>> items.score("accuracy")
        0.5
    """

    keys: np.ndarray
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        keys = np.asarray(self.keys)
        if keys.size == 0:
            keys = keys.astype(str)
        stats = {name: np.asarray(arr) for name, arr in self.stats.items()}
        problem = _problem(keys, stats)
        if problem:
            raise ValueError(problem)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "stats", {name: arr.astype(np.float64) for name, arr in stats.items()})

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def score(self, name: str) -> float:
        """The figure of statistic ``name`` over all the items (its score of the column sums)."""
        return float(resolve_score(name).fn(self.stats[name].sum(axis=0)))

    def with_prefix(self, prefix: str) -> "ItemStats":
        """The same items, every statistic renamed ``<prefix>_<name>`` (``beam5_wer``)."""
        return ItemStats(self.keys, {f"{prefix}_{name}": arr for name, arr in self.stats.items()})

    def merged(self, other: "ItemStats") -> "ItemStats":
        """The statistics of both (same items, same order: e.g. two searches over one split)."""
        if self.keys.shape != other.keys.shape or not np.array_equal(self.keys, other.keys):
            raise ValueError("item statistics of different items cannot be merged")
        clash = sorted(set(self.stats) & set(other.stats))
        if clash:
            raise ValueError(f"both hold statistics {clash}")
        return ItemStats(self.keys, {**self.stats, **other.stats})

    # -------------------------------------------------------------------------------- the file
    def save(self, path: str | os.PathLike) -> None:
        """Writes one ``.npz`` at ``path`` (exactly that name): ``format_version``, ``keys`` and one
        ``stats_<name>`` array per statistic."""
        members = {_VERSION: np.array(FORMAT_VERSION, np.int64), _KEYS: self.keys.astype(str)}
        members.update({_STATS + name: arr.astype(np.float64) for name, arr in self.stats.items()})
        with open(path, "wb") as f:
            np.savez_compressed(f, **members)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ItemStats":
        """Reads :meth:`save`'s file, checking everything in it; anything wrong is a ValueError that
        names the file and says what (never a pickle: object arrays are refused)."""
        where = os.fspath(path)

        def bad(what: str) -> ValueError:
            return ValueError(f"{where}: not a valid item-statistics file: {what}")

        try:
            archive = np.load(where, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise bad(f"cannot read it ({e})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise bad("it holds one array, not an .npz archive")
        with archive:
            names = list(archive.files)
            for required in (_VERSION, _KEYS):
                if required not in names:
                    raise bad(f"member {required!r} is missing (it has {sorted(names)})")
            unknown = sorted(n for n in names if n not in (_VERSION, _KEYS) and not n.startswith(_STATS))
            if unknown:
                raise bad(f"unexpected members {unknown}")
            arrays = {}
            for name in names:
                try:
                    arrays[name] = archive[name]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                    raise bad(f"member {name!r} cannot be read without pickles ({e})") from None
        version = arrays.pop(_VERSION)
        if version.shape != () or version.dtype.kind not in "iu":
            raise bad(f"format_version must be an integer scalar, got {version.dtype} of shape {version.shape}")
        if int(version) != FORMAT_VERSION:
            raise bad(f"format version {int(version)} is not supported (this rnnflow reads version {FORMAT_VERSION})")
        keys = arrays.pop(_KEYS)
        stats = {name[len(_STATS):]: arr for name, arr in arrays.items()}
        problem = _problem(keys, stats)
        if problem:
            raise bad(problem)
        return cls(keys, stats)
