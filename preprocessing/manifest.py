"""Reading a prepared data directory's ``manifest.json`` and checking it against what a model expects."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import tensorflow as tf

MANIFEST_NAME = "manifest.json"


class DataError(ValueError):
    """A prepared data directory that cannot be used; the message names the file and the problem."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without ``fingerprint`` and ``runner`` (the runner does not change the data)."""
    body = {k: v for k, v in manifest.items() if k not in ("fingerprint", "runner")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


REQUIRED_KEYS = ("task", "dataset", "sources", "tokenizer", "vocab", "splits", "rejected", "config", "fingerprint")


def load_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
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
    return manifest


def split_paths(data_dir: str | os.PathLike, manifest: dict[str, Any], split: str) -> list[str]:
    """The split's shard paths in file-name order (which is corpus order, see docs/ARCHITECTURE.md)."""
    splits = manifest["splits"]
    if split not in splits:
        raise DataError(
            f"{os.path.join(os.fspath(data_dir), MANIFEST_NAME)}: no split {split!r} (has: {', '.join(sorted(splits))})"
        )
    return [os.path.join(os.fspath(data_dir), p) for p in sorted(splits[split]["shards"])]


def vocab_path(data_dir: str | os.PathLike, manifest: dict[str, Any]) -> str:
    return os.path.join(os.fspath(data_dir), manifest["vocab"]["path"])


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_compatible(
    manifest: dict[str, Any], *, task: str, vocab_size: int | None = None, vocab_sha256: str | None = None
) -> None:
    """Refuses data that does not match the model: a different task, vocabulary size or vocabulary file."""
    if manifest["task"] != task:
        raise DataError(f"the data was prepared for task {manifest['task']!r} but the model is a {task!r} model")
    vocab = manifest["vocab"]
    if vocab_size is not None and int(vocab["size"]) != int(vocab_size):
        raise DataError(
            f"the data's vocabulary has {vocab['size']} tokens but the model was built for {vocab_size}; "
            "prepare the data with the model's vocabulary or train a new model"
        )
    if vocab_sha256 is not None and vocab.get("sha256") not in (None, vocab_sha256):
        raise DataError(
            "the data's vocabulary file differs from the model's (sha256 "
            f"{vocab.get('sha256', '?')[:12]} vs {vocab_sha256[:12]}); token ids would not match"
        )
