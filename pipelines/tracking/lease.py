"""A lock on a registered model's promotion, held in the registry itself, so that runs on different
machines sharing one tracking server promote one at a time.

MLflow has no compare-and-set on an alias: two runs that both read ``@champion = 3``, both beat it
and both set the alias leave whichever wrote last as champion, and each logs that it won. The one
atomic operation every MLflow store offers is creating a registered model: a name is unique, and a
second ``create_registered_model`` of it fails (``RESOURCE_ALREADY_EXISTS``) on sqlite, PostgreSQL
and a tracking server alike. The lock is therefore a registered model named
``<name>.promotion-lock``, created with tags naming its holder and when it expires, and deleted when
the promotion is done. It exists only while a promotion runs (seconds).

A holder that died leaves its lock behind: a lock past its expiry (:data:`LEASE_S` after it was
taken) is deleted by the next promoter, which then takes it the normal way. Breaking a lock checks
its holder first; between that check and the delete a third process could in principle take a fresh
lock and lose it, so a holder re-checks that the lock is still its own just before it writes
(:meth:`PromotionLock.still_held`). Promotions take seconds and leases minutes, so that path needs a
holder stalled for minutes and two promoters breaking its lock in the same instant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

LEASE_S = 300.0  # a lock older than this is taken to belong to a dead process
WAIT_S = 600.0  # how long a promoter waits for a lock before it gives up
HOLDER_TAG = "rnnflow.lock.holder"
EXPIRES_TAG = "rnnflow.lock.expires"
LOCK_SUFFIX = ".promotion-lock"


class PromotionLockTimeout(TimeoutError):
    """The promotion lock stayed held by another process for longer than the wait."""


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


def is_lock(model_name: str) -> bool:
    """Whether a registered model name is a promotion lock (to leave out of listings)."""
    return model_name.endswith(LOCK_SUFFIX)


def _exists_error(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(error).lower()


class PromotionLock:
    """Holds ``<model>.promotion-lock`` in ``client``'s registry (a context manager).

    Args:
        client: the registry.
        model_name: the registered model whose aliases are guarded.
        lease_s: how long the lock counts as held if its holder never releases it.
        wait_s: how long to wait for another holder before :class:`PromotionLockTimeout`.
    """

    def __init__(self, client: MlflowClient, model_name: str, lease_s: float = LEASE_S, wait_s: float = WAIT_S):
        self.client = client
        self.model_name = model_name
        self.name = lock_name(model_name)
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _try_create(self) -> bool:
        expires = time.time() + self.lease_s
        try:
            self.client.create_registered_model(
                self.name, tags={HOLDER_TAG: self.holder, EXPIRES_TAG: f"{expires:.3f}"},
                description=f"rnnflow: held while a promotion of {self.model_name!r} runs; deleted after it")
            return True
        except MlflowException as error:
            if _exists_error(error):
                return False
            raise

    def _holder_and_expiry(self) -> tuple[str | None, float | None]:
        try:
            tags = self.client.get_registered_model(self.name).tags or {}
        except MlflowException:
            return None, None  # released meanwhile
        try:
            expires = float(tags.get(EXPIRES_TAG, "nan"))
        except ValueError:
            expires = float("nan")
        return tags.get(HOLDER_TAG), expires

    def _break_if_stale(self) -> None:
        holder, expires = self._holder_and_expiry()
        if holder is None and expires is None:
            return
        if expires == expires and expires > time.time():  # not NaN and not yet expired
            return
        if self._holder_and_expiry()[0] != holder:  # taken afresh since we looked
            return
        log.warning("breaking the promotion lock %s of %s (expired %s)", self.name, holder,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(expires)) if expires == expires else "unknown")
        with contextlib.suppress(MlflowException):
            self.client.delete_registered_model(self.name)

    def acquire(self) -> "PromotionLock":
        deadline = time.monotonic() + self.wait_s
        pause = 0.2
        while not self._try_create():
            self._break_if_stale()
            if time.monotonic() > deadline:
                holder, _ = self._holder_and_expiry()
                raise PromotionLockTimeout(
                    f"the promotion lock {self.name!r} is held by {holder} for more than {self.wait_s:.0f} s; "
                    f"if no rnnflow run is promoting {self.model_name!r}, delete that registered model "
                    f"(it expires by itself {self.lease_s:.0f} s after it was taken)")
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 1.5, 5.0)
        log.info("promotion lock %s taken by %s", self.name, self.holder)
        return self

    def still_held(self) -> bool:
        """Whether the lock is still this holder's (checked before writing aliases)."""
        return self._holder_and_expiry()[0] == self.holder

    def release(self) -> None:
        if self.still_held():
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model(self.name)

    def __enter__(self) -> "PromotionLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
