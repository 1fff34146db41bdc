"""Where runs are recorded: pointing MLflow at a store, sqlite artifact locations, experiments,
clients, metric histories."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else ``None``."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    rest = tracking_uri[len("sqlite:") :]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def default_artifact_location(tracking_uri: str) -> str | None:
    """The artifact root of a sqlite store: ``<db dir>/artifacts`` (absolute); ``None`` otherwise."""
    db = _sqlite_path(tracking_uri)
    if db is None:
        return None
    return str((db.parent / "artifacts").resolve())


def experiment_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``<db dir>/artifacts/<experiment>`` for sqlite
    (the name made file-safe); ``None`` lets the store decide (a tracking server)."""
    root = default_artifact_location(tracking_uri)
    if root is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return os.path.join(root, safe)


def configure(tracking_uri: str) -> str:
    """Points MLflow's tracking and registry at ``tracking_uri`` and returns it.

    For ``sqlite:///relative/path.db`` (or an absolute path) the database's directory is created.
    """
    db = _sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return tracking_uri


HTTP_SETTINGS = {"retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "backoff": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "timeout_s": "MLFLOW_HTTP_REQUEST_TIMEOUT"}


def configure_http(retries: int | None = None, backoff: int | None = None, timeout_s: int | None = None) -> dict:
    """How MLflow's client retries requests to a tracking server, for this process and the processes
    it starts (MLflow reads these environment variables on every request). ``None`` leaves a setting
    as it is (MLflow's default, or the variable the user set). Returns the settings in force.

    MLflow retries every method, POSTs included, on connection errors, 429 and 5xx answers, with
    exponential backoff: its defaults (7 retries, factor 2) ride out about four minutes of a server
    that is down or restarting."""
    for key, value in (("retries", retries), ("backoff", backoff), ("timeout_s", timeout_s)):
        if value is not None:
            os.environ[HTTP_SETTINGS[key]] = str(int(value))
    return {key: os.environ.get(var) for key, var in HTTP_SETTINGS.items()}


def _client(client_or_uri: MlflowClient | str | None) -> MlflowClient:
    if isinstance(client_or_uri, MlflowClient):
        return client_or_uri
    if client_or_uri is not None:
        configure(client_or_uri)
        return MlflowClient(tracking_uri=client_or_uri, registry_uri=client_or_uri)
    return MlflowClient()


def metric_history(client_or_uri: MlflowClient | str | None, run_id: str, key: str,
                   last_step: int | None = None) -> list[float]:
    """A run's values of ``key`` in step order (steps 1..``last_step`` when given)."""
    history = sorted(_client(client_or_uri).get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.value for m in history if last_step is None or 1 <= m.step <= last_step]


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with the store's artifact location) or restored."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=experiment_artifact_location(tracking_uri, name))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
