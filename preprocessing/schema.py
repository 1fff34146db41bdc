"""The TFRecord feature schema and the shard file names.

Every record is a serialized ``tf.train.Example`` whose features are all int64: ``"sequence"``
features hold any number of values, ``"scalar"`` features exactly one. A task (``pipelines.tasks``)
says which features its records hold as a *spec* ``{name: "sequence" | "scalar"}``; the prepare job
writes records with :func:`encode_example` and records the spec in the manifest (``features``), and
the tf.data input reads them back with :func:`parse_example` and that spec, so reading needs no task
code.

Shards are GZIP-compressed TFRecord files named ``<split>-NNNNN-of-NNNNN.tfrecord.gz``.

Example:

>>> spec = {"ids": SEQUENCE}
>>> parse_example(spec, encode_example(spec, {"ids": [5, 6, 3]}))["ids"].numpy().tolist()
[5, 6, 3]
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

# Bumped whenever the on-disk layout or the meaning of a feature changes; part of the prepare job's
# fingerprint, so a changed schema never reuses old prepared data.
SCHEMA_VERSION = 3  # 3: the manifest records the feature spec; unseen labels get ids >= the label set's size

SEQUENCE, SCALAR = "sequence", "scalar"
KINDS = (SEQUENCE, SCALAR)

Features = Mapping[str, str]

COMPRESSION = "GZIP"
SHARD_SUFFIX = ".tfrecord.gz"
SPLITS = ("train", "valid", "test")


def check_spec(spec: Features) -> dict[str, str]:
    """``spec`` as a plain dict, or a ValueError naming the bad entry."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"a feature spec is a non-empty mapping of name -> {' | '.join(KINDS)}, got {spec!r}")
    for key, kind in spec.items():
        if not isinstance(key, str) or kind not in KINDS:
            raise ValueError(f"feature {key!r}: kind must be one of {KINDS}, got {kind!r}")
    return dict(spec)


def encode_example(spec: Features, features: Mapping[str, Any]) -> bytes:
    """Serializes one example with exactly the features of ``spec`` (deterministic bytes: map keys are sorted).

    Args:
        spec: ``{name: kind}``; sequences are iterables of ints, scalars one int.
        features: the values, one per name of ``spec``.
    """
    spec = check_spec(spec)
    missing = sorted(set(spec) - set(features))
    extra = sorted(set(features) - set(spec))
    if missing or extra:
        raise ValueError(
            f"the schema takes features {sorted(spec)}; "
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
                raise ValueError(f"feature {key!r} is a scalar, got shape {arr.shape}")
            values = [int(arr)]
        else:
            arr = np.asarray(value, dtype=np.int64)
            if arr.ndim != 1:
                raise ValueError(f"feature {key!r} is a 1-D sequence, got shape {arr.shape}")
            values = arr.tolist()
        feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def feature_spec(spec: Features, batched: bool = False) -> dict[str, Any]:
    """The ``tf.io`` parsing spec of ``spec``; ``batched=True`` gives ragged sequences."""
    out = {}
    for key, kind in check_spec(spec).items():
        if kind == SCALAR:
            out[key] = tf.io.FixedLenFeature([], tf.int64)
        else:
            out[key] = tf.io.RaggedFeature(tf.int64) if batched else tf.io.VarLenFeature(tf.int64)
    return out


def parse_example(spec: Features, serialized) -> dict[str, tf.Tensor]:
    """Parses serialized examples written with ``spec`` (graph-safe).

    A scalar ``serialized`` gives dense 1-D int64 sequences and int64 scalars; a 1-D batch gives
    ``tf.RaggedTensor`` sequences ``[batch, (len)]`` and ``[batch]`` scalars.
    """
    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    rank = serialized.shape.rank
    if rank == 0:
        parsed = tf.io.parse_single_example(serialized, feature_spec(spec))
        return {
            k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in parsed.items()
        }
    if rank == 1:
        return tf.io.parse_example(serialized, feature_spec(spec, batched=True))
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

