"""``tf.distribute`` strategies by name, and who the chief is."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default", devices: list[str] | None = None) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, or ``devices``), ``multi_worker``.

    ``multi_worker`` reads the cluster from ``TF_CONFIG`` (every worker runs the same command with its
    own ``task.index``); it must be created before any other TensorFlow op runs in the process.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "training.strategy is 'multi_worker' but TF_CONFIG is not set; set it on every worker "
                '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}})'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def task_info(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that logs, exports and writes the real checkpoints."""
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    if task_type == "worker":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        return "chief" not in cluster and task_id == 0
    return False
