"""Output directories that appear only when complete: a job writes into a hidden temporary sibling
(``.<name>.tmp-<random>-<pid>-<host>``) and renames it into place at the end, so a killed job leaves
nothing that looks finished, at worst a hidden ``.tmp-`` directory, which the next job of the same
name removes once its owner process (this host, that pid) is gone.

Shared by the prepare job (:mod:`pipelines.prepare`) and the batch-scoring job (:mod:`pipelines.predict`).
All file access goes through ``tf.io.gfile`` (local paths, ``gs://``, ``hdfs://``, ...); on object
stores a directory rename is not atomic, so each job writes its ``manifest.json`` last.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import uuid
from typing import Any

import tensorflow as tf

log = logging.getLogger(__name__)

_TMP_OWNER = re.compile(r"\.tmp-[0-9a-f]{8}-(?P<pid>[0-9]+)-(?P<host>[A-Za-z0-9._-]+)$")


def is_local(path: str) -> bool:
    return "://" not in path


def rmtree(path: str) -> None:
    """Removes ``path`` and everything under it (nothing if it does not exist)."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def rename_dir(src: str, dst: str) -> None:
    """Renames directory ``src`` to ``dst`` (atomic on one local filesystem; ``dst`` must not exist)."""
    if is_local(src):
        os.rename(src, dst)
    else:
        tf.io.gfile.rename(src, dst, overwrite=False)


def read_json(path: str) -> Any:
    with tf.io.gfile.GFile(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def host() -> str:
    """This machine's name as it appears in temporary directory names."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown"


def tmp_dir_name(name: str, host: str, pid: int) -> str:
    """The hidden temporary directory a job writing ``name`` uses: ``.<name>.tmp-<random>-<pid>-<host>``
    (the owner in the name, so a later job can tell a dead job's leftover from a running one)."""
    return f".{name}.tmp-{uuid.uuid4().hex[:8]}-{int(pid)}-{re.sub(r'[^A-Za-z0-9._-]', '_', host)}"


def tmp_owner(dirname: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a temporary directory named by :func:`tmp_dir_name`; None for other names."""
    m = _TMP_OWNER.search(dirname)
    return (m.group("host"), int(m.group("pid"))) if m else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True  # unknown: keep the directory
    return True


def make_tmp_dir(parent: str, name: str) -> str:
    """Creates and returns a fresh :func:`tmp_dir_name` directory for ``name`` inside ``parent``."""
    tf.io.gfile.makedirs(parent)
    path = os.path.join(parent, tmp_dir_name(name, host(), os.getpid()))
    tf.io.gfile.makedirs(path)
    return path


def remove_dead_leftovers(parent: str, name: str, logger: logging.Logger = log) -> None:
    """Removes ``.<name>.tmp-*`` directories in ``parent`` whose owner (this host, a pid no longer
    alive) is gone; logs (to ``logger``, the calling job's) those it leaves: another host's, a live
    process', or of unknown owner."""
    try:
        entries = tf.io.gfile.listdir(parent)
    except (OSError, tf.errors.OpError):
        return
    here = host()
    for entry in sorted(e.rstrip("/") for e in entries):
        if not entry.startswith(f".{name}.tmp-"):
            continue
        path = os.path.join(parent, entry)
        owner = tmp_owner(entry)
        if owner is None:
            logger.info("leaving %s: a temporary directory of unknown owner (delete it if no job is running)", path)
        elif owner[0] != here:
            logger.info("leaving %s: its owner runs on host %s", path, owner[0])
        elif owner[1] != os.getpid() and not pid_alive(owner[1]):
            logger.warning("removing %s: left by a job (pid %d) that is gone", path, owner[1])
            rmtree(path)
        else:
            logger.info("leaving %s: its owner (pid %d) is still running", path, owner[1])
