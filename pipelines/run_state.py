"""A run's work directory, safe for one run at a time: the lock and ``state.json``.

:class:`RunLock` is an exclusive, non-blocking ``flock`` on ``<work_dir>/.lock`` (per worker under a
multi-worker strategy), released when the process dies, so a killed run never leaves a stale lock.
``state.json`` (in ``<work_dir>/<training key>/``) records the training's MLflow run and status and,
per output key, the MLflow run and result of its evaluation / export (see :mod:`pipelines.run`); it
is replaced atomically, so a kill leaves the old or the new state, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any


class RunLockedError(RuntimeError):
    """Another run holds the work directory's lock."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<work_dir>/<name>``; released when the process dies."""

    def __init__(self, work_dir: Path, name: str = ".lock"):
        self.path = Path(work_dir) / name
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text(errors="replace").strip() or "another process"
            raise RunLockedError(
                f"{self.path} is locked by {holder}: another run is using {self.path.parent}. "
                "Wait for it to finish (this run changed nothing)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_state(path: Path) -> dict[str, Any]:
    """The state at ``path``; ``{}`` if there is none yet (or it is unreadable: the run starts over)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Writes ``state`` to ``path`` atomically (a temporary file renamed over it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.replace(tmp, path)
