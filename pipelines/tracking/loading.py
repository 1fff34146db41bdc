"""Models back from MLflow: resolving ``models:/`` and ``runs:/`` URIs against a store that must
exist (nothing is created), and loading through :mod:`keras_models.saving` (no artifact code)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from keras_models import saving
from keras_models.saving import ModelNotFoundError, UnsafeModelError
from pipelines.tracking.lease import is_lock
from pipelines.tracking.store import _quoted, _sqlite_path


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned down: ``uri`` is ``models:/name/version`` for registry URIs."""

    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    source: str | None = None


def _read_only_client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    """A client of an existing store, created without writing anything (no database, no folders)."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    db = _sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ModelNotFoundError(
            f"no MLflow store at {uri} ({db} does not exist); pass --tracking-uri or set MLFLOW_TRACKING_URI "
            "to the store that holds the model"
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _registry_miss(client: MlflowClient, store: str, model_uri: str, name: str, what: str) -> ModelNotFoundError:
    """The error for a missing version or alias of ``name``, listing what the registry does hold."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50) if not is_lock(m.name))
        held = f"registered models: {', '.join(names)}" if names else "the registry is empty"
        return ModelNotFoundError(f"{model_uri}: no registered model {name!r} in {store} ({held})")
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name={_quoted(name)}"))
    aliases = ", ".join(f"@{a} = version {v}" for a, v in sorted((registered.aliases or {}).items())) or "none"
    listed = ", ".join(map(str, versions)) or "none"
    return ModelNotFoundError(f"{model_uri}: registered model {name!r} has {what} (versions: {listed}; aliases: {aliases})")


def resolve_model_uri(model_uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Resolves ``models:/name@alias``, ``models:/name/<version|latest>``, ``models:/m-<id>`` and
    ``runs:/<run id>/<path>`` against the store, which must exist (nothing is created).

    Raises:
        ModelNotFoundError: no such store, registered model, version, alias, logged model or run;
            the message lists what exists instead.
    """
    client, store = _read_only_client(tracking_uri)
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            try:
                mv = client.get_model_version_by_alias(name, alias)
            except MlflowException:
                raise _registry_miss(client, store, model_uri, name, f"no alias {alias!r}") from None
        elif "/" in rest:
            name, ver = rest.split("/", 1)
            if ver == "latest":
                versions = client.search_model_versions(f"name={_quoted(name)}")
                if not versions:
                    raise _registry_miss(client, store, model_uri, name, "no versions")
                mv = max(versions, key=lambda v: int(v.version))
            elif not ver.isdigit():
                raise ModelNotFoundError(
                    f"{model_uri}: {ver!r} is not a version; use models:/{name}/<number>, models:/{name}/latest "
                    f"or models:/{name}@<alias>"
                )
            else:
                try:
                    mv = client.get_model_version(name, ver)
                except MlflowException:
                    raise _registry_miss(client, store, model_uri, name, f"no version {ver}") from None
        else:  # a logged model id (models:/m-<id>)
            try:
                logged = client.get_logged_model(rest)
            except MlflowException:
                raise ModelNotFoundError(f"{model_uri}: no logged model {rest!r} in {store}") from None
            return ResolvedModel(uri=model_uri, run_id=logged.source_run_id, source=logged.artifact_location)
        return ResolvedModel(
            uri=f"models:/{mv.name}/{mv.version}", name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source
        )
    if model_uri.startswith("runs:/"):
        run_id = model_uri[len("runs:/") :].split("/", 1)[0]
        try:
            client.get_run(run_id)
        except MlflowException:
            raise ModelNotFoundError(f"{model_uri}: no run {run_id!r} in {store}") from None
        return ResolvedModel(uri=model_uri, run_id=run_id, source=model_uri)
    return ResolvedModel(uri=model_uri, source=model_uri)


def local_path(model_uri: str) -> str | None:
    """The filesystem path of a plain path or ``file://`` URI; ``None`` for other URIs."""
    if model_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(model_uri).path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", model_uri):  # models:/, runs:/, s3://, http://, ...
        return None
    return model_uri


def load_logged_model(local_dir: str | os.PathLike) -> Any:
    """The Keras model of an MLflow model directory (``MLmodel`` + ``data/model.keras``) logged by
    :meth:`Tracker.log_model`, loaded by :func:`keras_models.saving.load_model`: Keras' and rnnflow's
    own classes only, ``safe_mode``. Never puts a folder of the artifact on ``sys.path`` and never
    imports a module the artifact names; a model that ships code is refused.

    Raises:
        ModelNotFoundError: no ``MLmodel`` there.
        UnsafeModelError: not a Keras model, a model that ships code or a SavedModel, a data path
            outside the directory, or a class rnnflow does not allow.
    """
    local = os.path.realpath(os.fspath(local_dir))
    mlmodel = os.path.join(local, "MLmodel")
    if not os.path.isfile(mlmodel):
        raise ModelNotFoundError(f"{local}: no MLmodel file here (not an MLflow model directory)")
    _drop_from_sys_path(local)  # mlflow.pyfunc may have put the artifact's code/ folder there
    try:
        conf = Model.load(mlmodel)
    except Exception as err:  # noqa: BLE001 - any parse error of a foreign file
        raise UnsafeModelError(f"{mlmodel}: not a readable MLmodel file ({err})") from None
    keras_conf = conf.flavors.get("keras")
    if not isinstance(keras_conf, dict):
        raise UnsafeModelError(f"{mlmodel}: not a Keras model (flavors: {', '.join(sorted(conf.flavors)) or 'none'})")
    shipped = sorted(name for name, flavor in conf.flavors.items() if isinstance(flavor, dict) and flavor.get("code"))
    if shipped:
        raise UnsafeModelError(
            f"{mlmodel}: the model ships code (flavor(s) {', '.join(shipped)} have a 'code' folder); rnnflow never "
            "logs code with a model and does not load one that does"
        )
    if keras_conf.get("save_exported_model"):
        raise UnsafeModelError(f"{mlmodel}: an exported SavedModel, not a .keras model; rnnflow loads .keras models only")
    data = os.path.realpath(os.path.join(local, str(keras_conf.get("data", "model"))))
    if os.path.isdir(data):
        data = os.path.join(data, "model")
    data += ".keras"
    if os.path.commonpath([local, data]) != local:
        raise UnsafeModelError(f"{mlmodel}: the model file {data} lies outside the model directory")
    return saving.load_model(data)


def _drop_from_sys_path(directory: str) -> None:
    sys.path[:] = [p for p in sys.path if not (p and os.path.realpath(p).startswith(directory + os.sep))]


def load_model(model_uri: str, tracking_uri: str | None = None, dst_path: str | None = None) -> Any:
    """Loads a Keras model logged by :meth:`Tracker.log_model`: ``models:/name@alias``,
    ``models:/name/<version>``, ``models:/m-<id>``, ``runs:/<id>/model``, ``file://`` URIs and local
    MLflow model directories (see :func:`load_logged_model` for what is and is not done).

    Nothing is written to the store (a missing sqlite store is an error, not created).
    """
    path = local_path(model_uri)
    if path is not None:
        if not os.path.exists(path):
            raise ModelNotFoundError(f"{model_uri}: no such file or directory")
        return load_logged_model(path)
    resolved = resolve_model_uri(model_uri, tracking_uri)
    with tempfile.TemporaryDirectory() if dst_path is None else contextlib.nullcontext(dst_path) as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=tmp)
        except (MlflowException, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelNotFoundError(f"{model_uri}: could not fetch the model ({first})") from None
        return load_logged_model(local)
