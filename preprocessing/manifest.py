"""Reading a prepared data directory's ``manifest.json`` and checking it against what a model expects."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, Sequence

import tensorflow as tf

from preprocessing.vocab import Vocabulary

MANIFEST_NAME = "manifest.json"
CHUNK_SIZE = 1 << 20


class DataError(ValueError):
    """A prepared data directory that cannot be used; the message names the file and the problem."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without ``fingerprint`` and ``runner`` (the runner does not change the data)."""
    body = {k: v for k, v in manifest.items() if k not in ("fingerprint", "runner")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


REQUIRED_KEYS = ("task", "dataset", "sources", "tokenizer", "vocab", "splits", "rejected", "config", "fingerprint")


# The files a manifest may record (``{"path", "size", "sha256"}``), relative to its directory:
# vocabularies, label sets and the labels of valid/test items unseen in training.
FILE_KEYS = ("vocab", "labels", "chars", "target_vocab", "unseen_labels")


class Manifest(Mapping[str, Any]):
    """A loaded ``manifest.json``: the JSON object (read-only mapping) plus typed accessors, and the
    directory it describes.

    Example:
        >>> m = load_manifest("data/prepared/ptb-0123456789ab")
        >>> m.task, m.tokenizer["level"], m.file("vocab")
        ('lm', 'word', 'data/prepared/ptb-0123456789ab/vocab/tokens.txt')
    """

    def __init__(self, data: dict[str, Any], directory: str | os.PathLike):
        self._data = data
        self.directory = os.fspath(directory)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def path(self) -> str:
        return os.path.join(self.directory, MANIFEST_NAME)

    @property
    def task(self) -> str:
        return self._data["task"]

    @property
    def fingerprint(self) -> str:
        return self._data["fingerprint"]

    @property
    def tokenizer(self) -> dict[str, Any]:
        """The (source) tokenizer config, as ``TokenizerConfig.to_dict()``."""
        return self._data["tokenizer"]

    @property
    def target_tokenizer(self) -> dict[str, Any] | None:
        """seq2seq: the target side's tokenizer config; ``None`` otherwise."""
        return self._data.get("target_tokenizer")

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        return self._data["splits"]

    def has_file(self, key: str) -> bool:
        """Whether the data has the file ``key`` (one of :data:`FILE_KEYS`, e.g. ``"chars"``)."""
        return isinstance(self._data.get(key), dict) and "path" in self._data[key]

    def file(self, key: str) -> str:
        """The path of the recorded file ``key`` (``"vocab"``, ``"labels"``, ``"chars"``, ``"target_vocab"``)."""
        if not self.has_file(key):
            have = ", ".join(k for k in FILE_KEYS if self.has_file(k)) or "none"
            raise DataError(f"{self.path}: the data has no {key!r} file (it has: {have})")
        return os.path.join(self.directory, self._data[key]["path"])


def load_manifest(data_dir: str | os.PathLike) -> Manifest:
    """Reads and checks ``<data_dir>/manifest.json``.

    Raises:
        DataError: naming the file, if it is missing, not JSON, lacks keys, or its fingerprint does not
            match its content (edited or truncated).
    """
    path = os.path.join(os.fspath(data_dir), MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise DataError(
            f"{path}: no manifest (not a prepared data directory, or preparation did not finish); "
            "run `rnnflow prepare CONFIG` first"
        )
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: corrupt manifest, not valid JSON ({err}); delete the directory and prepare again") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: corrupt manifest, expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{path}: corrupt manifest, missing key(s) {missing}")
    if manifest_fingerprint(manifest) != manifest["fingerprint"]:
        raise DataError(f"{path}: manifest content does not match its fingerprint (edited or damaged)")
    return Manifest(manifest, data_dir)


def rebuild_hint(data_dir: str | os.PathLike) -> str:
    """What to do about a damaged prepared directory (the end of every verification error)."""
    return (f"run `rnnflow prepare CONFIG --force` (or delete {os.fspath(data_dir)}) "
            "to prepare the data again")


def read_or_explain(iterator, what: str, data_dir: str | os.PathLike):
    """Yields ``iterator``'s items (a tf.data NumPy iterator over prepared shards); a TensorFlow read
    error becomes a :class:`DataError` ``"<what> (<error>); <rebuild hint>"``."""
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as err:
            detail = (err.message or type(err).__name__).strip().splitlines()[-1]
            raise DataError(f"{what} ({type(err).__name__}: {detail}); {rebuild_hint(data_dir)}") from None
        yield item


def file_digest(path: str, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """``(sha256 hex digest, size in bytes)`` of a file, streamed in chunks (any ``tf.io.gfile`` path)."""
    digest, size = hashlib.sha256(), 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_file(path: str, expected_sha256: str, expected_bytes: int | None, what: str, data_dir) -> None:
    if not tf.io.gfile.exists(path):
        raise DataError(f"{path}: {what} listed in the manifest is missing; {rebuild_hint(data_dir)}")
    found_sha256, found_bytes = file_digest(path)
    if expected_bytes is not None and found_bytes != expected_bytes:
        raise DataError(
            f"{path}: {what} has {found_bytes} bytes, the manifest expects {expected_bytes} "
            f"(sha256 {found_sha256}, expected {expected_sha256}): truncated or replaced after preparation; "
            + rebuild_hint(data_dir)
        )
    if found_sha256 != expected_sha256:
        raise DataError(
            f"{path}: {what} has sha256 {found_sha256}, the manifest expects {expected_sha256}: "
            f"changed or replaced after preparation; {rebuild_hint(data_dir)}"
        )


def shard_info(data_dir: str | os.PathLike, manifest: dict[str, Any], split: str) -> dict[str, dict[str, Any]]:
    """``{shard name: {"sha256", "bytes", "examples", "tokens"}}`` of a split, as the prepare job recorded it.

    Raises:
        DataError: if the split does not exist or the manifest records no shard hashes (older data).
    """
    split_paths(data_dir, manifest, split)  # the split exists
    s = manifest["splits"][split]
    info = s.get("shard_info")
    if info is None or sorted(info) != sorted(s["shards"]):
        raise DataError(
            f"{os.path.join(os.fspath(data_dir), MANIFEST_NAME)}: the manifest records no shard sha256 and "
            f"counts for split {split!r} (prepared by an older rnnflow); {rebuild_hint(data_dir)}"
        )
    return info


def verify_shards(data_dir: str | os.PathLike, manifest: dict[str, Any], splits: Sequence[str] | None = None) -> None:
    """Checks every shard of ``splits`` (default: all) against the manifest's size and sha256.

    Streams each file once (``tf.io.gfile``, chunked sha256); nothing is decompressed.

    Raises:
        DataError: naming the first shard that is missing, of another size or of another sha256, what
            was expected and what was found, and saying how to prepare the data again.
    """
    for split in (manifest["splits"] if splits is None else splits):
        info = shard_info(data_dir, manifest, split)
        for path in split_paths(data_dir, manifest, split):
            expected = info[os.path.basename(path)]
            _check_file(path, expected["sha256"], expected.get("bytes"), f"shard of split {split!r}", data_dir)


def verify_files(data_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Checks the vocabulary files the manifest records (``vocab``, ``labels``, ``chars``,
    ``target_vocab``) against their sha256; same errors as :func:`verify_shards`."""
    for key in FILE_KEYS:
        entry = manifest.get(key)
        if isinstance(entry, dict) and entry.get("sha256") and entry.get("path"):
            _check_file(os.path.join(os.fspath(data_dir), entry["path"]), entry["sha256"], None,
                        f"{key} file", data_dir)


def verify(data_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """:func:`verify_files` and :func:`verify_shards` over every split: the whole directory."""
    verify_files(data_dir, manifest)
    verify_shards(data_dir, manifest)


def split_paths(data_dir: str | os.PathLike, manifest: dict[str, Any], split: str) -> list[str]:
    """The split's shard paths in file-name order (which is corpus order, see docs/ARCHITECTURE.md)."""
    splits = manifest["splits"]
    if split not in splits:
        raise DataError(
            f"{os.path.join(os.fspath(data_dir), MANIFEST_NAME)}: no split {split!r} (has: {', '.join(sorted(splits))})"
        )
    return [os.path.join(os.fspath(data_dir), p) for p in sorted(splits[split]["shards"])]


def vocab_path(data_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str:
    """The token vocabulary's path (``Manifest.file("vocab")`` for a loaded manifest)."""
    return os.path.join(os.fspath(data_dir), manifest["vocab"]["path"])


def check_compatible(manifest: dict[str, Any], *, task: str, vocabulary: Sequence[str] | None = None) -> None:
    """Refuses data that does not match the model: another task, or another vocabulary (token ids would differ).

    ``vocabulary`` is the model's token list in id order; it is compared with the data's vocabulary
    file by size and sha256 of its contents.
    """
    if manifest["task"] != task:
        raise DataError(f"the data was prepared for task {manifest['task']!r} but the model is a {task!r} model")
    if vocabulary is None:
        return
    vocab = manifest["vocab"]
    if int(vocab["size"]) != len(vocabulary):
        raise DataError(
            f"the data's vocabulary has {vocab['size']} tokens but the model's has {len(vocabulary)}; "
            "evaluate on data prepared with the model's config, or train a new model"
        )
    digest = hashlib.sha256(Vocabulary(vocabulary).to_bytes()).hexdigest()  # the bytes of vocab/tokens.txt
    if vocab.get("sha256") and vocab["sha256"] != digest:
        raise DataError(
            "the data's vocabulary lists other tokens than the model's (same size, different contents); "
            "token ids would not match: evaluate on data prepared with the model's config"
        )
