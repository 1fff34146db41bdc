"""The TFRecord feature schema, defined once per task, and the shard file names.

Every record is a serialized ``tf.train.Example`` whose features are all int64: ``"sequence"``
features hold any number of values, ``"scalar"`` features exactly one. The Beam prepare job writes
records with :func:`encode_example`; the tf.data input reads them with :func:`parse_example`.

Shards are GZIP-compressed TFRecord files named ``<split>-NNNNN-of-NNNNN.tfrecord.gz``.

Example:

>>> data = encode_example("lm", {"ids": [5, 6, 3]})
>>> parse_example("lm", data)["ids"].numpy().tolist()
[5, 6, 3]
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

# Bumped whenever the on-disk layout or the meaning of a feature changes; part of the prepare job's
# fingerprint, so a changed schema never reuses old prepared data.
SCHEMA_VERSION = 2

SEQUENCE, SCALAR = "sequence", "scalar"

TASK_FEATURES: dict[str, dict[str, str]] = {
    "lm": {"ids": SEQUENCE},
    "tagging": {"ids": SEQUENCE, "tags": SEQUENCE},
    "classification": {"ids": SEQUENCE, "label": SCALAR},
    "seq2seq": {"source_ids": SEQUENCE, "target_ids": SEQUENCE},
}

# Features a task's records may carry; parsing always returns them (empty sequences when absent).
# Tagging with character features: ``chars`` holds the character ids of every token, concatenated,
# and ``char_lengths`` the number of characters of each token (one value per token).
OPTIONAL_FEATURES: dict[str, dict[str, str]] = {
    "tagging": {"chars": SEQUENCE, "char_lengths": SEQUENCE},
}

COMPRESSION = "GZIP"
SHARD_SUFFIX = ".tfrecord.gz"
SPLITS = ("train", "valid", "test")


def _features(task: str, optional: bool = False) -> dict[str, str]:
    try:
        features = TASK_FEATURES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASK_FEATURES)}") from None
    return {**features, **OPTIONAL_FEATURES.get(task, {})} if optional else features


def encode_example(task: str, features: Mapping[str, Any]) -> bytes:
    """Serializes one example of ``task`` (deterministic bytes: map keys are sorted).

    Args:
        task: a key of :data:`TASK_FEATURES`.
        features: the task's keys (and any of its optional ones); sequences are iterables of ints,
            scalars one int.
    """
    required = _features(task)
    spec = {k: kind for k, kind in _features(task, optional=True).items() if k in required or k in features}
    missing = sorted(set(required) - set(features))
    extra = sorted(set(features) - set(spec))
    if missing or extra:
        raise ValueError(
            f"task {task!r} takes features {sorted(spec)}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )
    feature = {}
    for key, kind in spec.items():
        value = features[key]
        if kind == SCALAR:
            arr = np.asarray(value)
            if arr.ndim != 0:
                raise ValueError(f"feature {key!r} of task {task!r} is a scalar, got shape {arr.shape}")
            values = [int(arr)]
        else:
            arr = np.asarray(value, dtype=np.int64)
            if arr.ndim != 1:
                raise ValueError(f"feature {key!r} of task {task!r} is a 1-D sequence, got shape {arr.shape}")
            values = arr.tolist()
        feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def feature_spec(task: str, batched: bool = False) -> dict[str, Any]:
    """The ``tf.io`` parsing spec for ``task`` (optional features included); ``batched=True`` gives ragged sequences."""
    spec = {}
    for key, kind in _features(task, optional=True).items():
        if kind == SCALAR:
            spec[key] = tf.io.FixedLenFeature([], tf.int64)
        else:
            spec[key] = tf.io.RaggedFeature(tf.int64) if batched else tf.io.VarLenFeature(tf.int64)
    return spec


def parse_example(task: str, serialized) -> dict[str, tf.Tensor]:
    """Parses serialized examples of ``task`` (graph-safe).

    A scalar ``serialized`` gives dense 1-D int64 sequences and int64 scalars; a 1-D batch gives
    ``tf.RaggedTensor`` sequences ``[batch, (len)]`` and ``[batch]`` scalars.
    """
    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    rank = serialized.shape.rank
    if rank == 0:
        parsed = tf.io.parse_single_example(serialized, feature_spec(task))
        return {
            k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in parsed.items()
        }
    if rank == 1:
        return tf.io.parse_example(serialized, feature_spec(task, batched=True))
    raise ValueError(f"parse_example takes a scalar or 1-D string tensor, got shape {serialized.shape}")


def example_length(features: Mapping[str, Any]) -> int:
    """An example's length in ids, as the manifest counts ``tokens``: its ``ids``, or its
    ``source_ids`` (seq2seq). Used by the prepare job (writing) and the input functions (reading)."""
    return len(features["ids"] if "ids" in features else features["source_ids"])


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``shard_name("train", 0, 4) == "train-00000-of-00004.tfrecord.gz"``."""
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} is outside 0..{num_shards - 1}")
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"

