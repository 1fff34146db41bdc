"""Writing files atomically with ``tf.io.gfile`` (local paths, ``gs://``, ``hdfs://``, ...): each file
goes to a temporary name first and is renamed, so a retried bundle never leaves a partial file behind."""

from __future__ import annotations

import os
import uuid
from typing import Iterable

import tensorflow as tf

from preprocessing import schema


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary sibling of ``path`` and renames it into place."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_tfrecords(path: str, records: Iterable[bytes]) -> int:
    """Writes a GZIP TFRecord file (temporary name, then rename); returns the record count."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    n = 0
    with tf.io.TFRecordWriter(tmp, options=schema.COMPRESSION) as writer:
        for record in records:
            writer.write(record)
            n += 1
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return n
