"""Reading a prepared data directory's ``manifest.json`` and checking it against what a model expects."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Sequence

import tensorflow as tf

from preprocessing.vocab import Vocabulary

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
