"""MLflow tracking and model registry: the only module that talks to MLflow.

Everything a run records goes through :class:`Tracker`; registry decisions go through
:func:`promote`; models come back through :func:`load_model`.

Store layout. The default tracking URI is ``sqlite:///mlflow_runs/mlflow.db``. For a sqlite store,
:func:`configure` creates the database's directory and experiments created here put their artifacts
in ``<db dir>/artifacts/<experiment>`` (so nothing lands in ``./mlruns``). A remote ``mlflow server`` decides its
own artifact location.

Models. Keras 3 models are logged with MLflow's ``keras`` flavor (a ``.keras`` file). Models that
take raw strings have a ``tf.string`` input; their signature is an MLflow ``TensorSpec`` of numpy
``object`` dtype with a dynamic batch dimension. Loading (:func:`load_model`, and the
``python_function`` loader, which is this module, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` take the same path) never runs code from the artifact: no folder of it goes
on ``sys.path``, no module name is taken from it, a model that ships code is refused, and Keras
rebuilds only its own classes and rnnflow's installed ones (:mod:`keras_models.saving`).

Registry. Versions are promoted with aliases (``champion``, ``challenger``), never with the
deprecated stages. A candidate becomes ``champion`` only when its metric strictly beats the current
champion's; the figure used for each version is stored on the version as the tag
``metric.<metric name>``.

Multi-worker training: only the chief logs; other workers make ``Tracker(..., enabled=False)``, whose
methods do nothing and write nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import math
import os
import re
import sys
import tempfile
import time
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import Schema, TensorSpec

from keras_models import saving
from keras_models.saving import ModelNotFoundError, UnsafeModelError

_logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"

# MLflow's limits (mlflow.utils.validation); values beyond them are truncated here, not rejected.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000



# --------------------------------------------------------------------------------------------
# Store configuration
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    marker = "...[truncated]"
    return value[: limit - len(marker)] + marker


def _to_str(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000).strip()
    return str(value)


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"training": {"optimizer": {"learning_rate": 1.0}}}`` → ``{"training.optimizer.learning_rate": "1.0"}``.

    Lists stay one value (in YAML flow style); ``None`` becomes ``"None"``; keys and values are
    truncated to MLflow's limits.
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[_truncate(name, MAX_KEY_LENGTH)] = _truncate(_to_str(value), MAX_PARAM_VALUE_LENGTH)
    return out


def _config_as_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "model_dump"):  # a pydantic RunConfig
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"log_config takes a mapping or a pydantic config, got {type(config).__name__}")


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# Keras model logging
# --------------------------------------------------------------------------------------------


def _np_dtype(dtype: Any) -> np.dtype:
    name = getattr(dtype, "name", None) or str(dtype)
    if name in ("string", "str", "object") or name.startswith("<U") or name.startswith("|S"):
        return np.dtype(object)
    return np.dtype(name)


def _tensor_spec(tensor: Any, name: str | None = None) -> TensorSpec:
    shape = [-1 if d is None else int(d) for d in tensor.shape]
    if shape:
        shape[0] = -1
    return TensorSpec(_np_dtype(tensor.dtype), shape, name=name)


def infer_keras_signature(model: Any, input_example: Any = None) -> ModelSignature | None:
    """A tensor signature for a Keras 3 model; ``tf.string`` inputs become numpy ``object`` tensors.

    With an input example the outputs are taken from ``model.predict`` on it; otherwise both sides
    come from the functional model's symbolic inputs and outputs. ``None`` when neither is possible.
    """
    if input_example is not None:
        example = _as_example(input_example)
        try:
            output = model.predict(example, verbose=0)
        except TypeError:
            output = model.predict(example)
        if isinstance(output, Mapping):
            output = {k: np.asarray(v) for k, v in output.items()}
        elif isinstance(output, (list, tuple)):
            output = {f"output_{i}": np.asarray(v) for i, v in enumerate(output)}
        signature = infer_signature(example, output)
        return signature
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None

    def schema(tensors: list, prefix: str) -> Schema:
        named = len(tensors) > 1  # several tensors are told apart by name
        return Schema(
            [_tensor_spec(t, (getattr(t, "name", None) or f"{prefix}_{i}") if named else None) for i, t in enumerate(tensors)]
        )

    return ModelSignature(inputs=schema(inputs, "input"), outputs=schema(outputs, "output"))


def _as_example(input_example: Any) -> Any:
    """Lists of strings (or a bare string) become a 1-D numpy ``object`` array."""
    if isinstance(input_example, str):
        return np.asarray([input_example], dtype=object)
    if isinstance(input_example, (list, tuple)) and input_example and all(isinstance(x, str) for x in input_example):
        return np.asarray(list(input_example), dtype=object)
    if isinstance(input_example, np.ndarray) and input_example.dtype.kind in ("U", "S"):
        return input_example.astype(object)
    return input_example


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in ("keras", "tensorflow", "tensorflow-text", "numpy", "mlflow"):
        if dist == "tensorflow-text" and "tensorflow_text" not in sys.modules:
            continue
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return reqs


def _save_keras_flavor(path: str, **kwargs: Any) -> None:
    """``mlflow.keras.save_model`` made to work for ``Model.log`` with an input example, and with
    this module as the ``python_function`` loader.

    mlflow 3.17's keras flavor writes the input example before creating the model directory, so the
    directory is created first. No code is ever saved with a model. The ``python_function`` loader
    becomes this module (:func:`_load_pyfunc`), which loads through :func:`load_logged_model`:
    rnnflow's own classes only, nothing imported from the artifact.
    """
    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)
    mlflow_model: Model = kwargs["mlflow_model"]
    mlflow_model.flavors.get("python_function", {})["loader_module"] = __name__
    mlflow_model.save(os.path.join(path, "MLmodel"))


_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_flavor)


def _load_pyfunc(path: str) -> "KerasPyfunc":
    """``python_function`` loader (``mlflow.pyfunc.load_model``, ``mlflow models serve``): the model
    through :func:`load_logged_model`."""
    return KerasPyfunc(load_logged_model(path))


class KerasPyfunc:
    """The ``python_function`` face of a logged Keras model: raw inputs in, numpy out.

    Input: a numpy array, a list, a dict of arrays, or a DataFrame (one column: that column; several:
    a dict of columns). Output: the model's array, or its dict of arrays (several outputs); byte
    strings are decoded to ``str`` so that a server can write them as JSON.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def get_raw_model(self) -> Any:
        return self.model

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            data = data.iloc[:, 0].to_numpy() if data.shape[1] == 1 else {c: data[c].to_numpy() for c in data.columns}
        if isinstance(data, (list, tuple)):
            data = _as_example(list(data))
        outputs = self.model.predict(data, verbose=0)
        if isinstance(outputs, Mapping):
            return {k: _decoded(np.asarray(v)) for k, v in outputs.items()}
        return _decoded(np.asarray(outputs))


def _decoded(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "S" or (array.dtype == object and array.size and isinstance(array.flat[0], bytes)):
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b, otypes=[object])(array)
    return array


# --------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------


class Tracker:
    """One MLflow run: params, metrics, artifacts, models. A context manager.

    Args:
        tracking_uri: where the run is recorded (``sqlite:///mlflow_runs/mlflow.db``, ``http://...``).
        experiment: experiment name, created when missing.
        run_name: the run's display name.
        tags: tags set when the run starts.
        enabled: ``False`` makes every method a no-op that writes nothing (non-chief workers).
        run_id: resume this existing run instead of starting a new one (re-runs).

    On leaving the ``with`` block the run ends ``FINISHED``, or ``FAILED`` when an exception escapes
    (``KILLED`` for ``KeyboardInterrupt``); the exception is never swallowed.

    Example:
        >>> with Tracker("sqlite:///mlflow_runs/mlflow.db", "rnnflow", run_name="ptb") as t:
        ...     t.log_config(config)
        ...     t.log_metrics({"loss": 4.2}, step=1)
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        enabled: bool = True,
        run_id: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.enabled = enabled
        self._resume_run_id = run_id
        self._run = None
        self._run_id: str | None = None
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The run's id (kept after the run ends); ``None`` when disabled or not started."""
        return self._run_id

    @property
    def client(self) -> MlflowClient | None:
        return self._client

    @property
    def active(self) -> bool:
        """True while an enabled tracker's run is open; logging calls need it."""
        if not self.enabled:
            return False
        if self._run is None:
            raise RuntimeError("Tracker is not started: use `with Tracker(...) as t:` or call start() first")
        return True

    def start(self) -> "Tracker":
        if not self.enabled or self._run is not None:
            return self
        if self._run_id is not None and self._resume_run_id is None:
            self._resume_run_id = self._run_id  # started again after end(): continue the same run
        configure(self.tracking_uri)
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if self._resume_run_id:
            run = self._client.get_run(self._resume_run_id)
            self.experiment_id = run.info.experiment_id
            self._run = mlflow.start_run(run_id=self._resume_run_id, nested=mlflow.active_run() is not None)
            self._run_id = self._run.info.run_id
        else:
            self.experiment_id = get_or_create_experiment(self._client, self.experiment, self.tracking_uri)
            self._run = mlflow.start_run(
                experiment_id=self.experiment_id,
                run_name=self.run_name,
                nested=mlflow.active_run() is not None,
            )
        self._run_id = self._run.info.run_id
        if self.tags:
            self.set_tags(self.tags)
        return self

    def end(self, status: str = "FINISHED") -> None:
        if self._run is None:
            return
        run_id = self._run.info.run_id
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status=status)
        else:
            self._client.set_terminated(run_id, status=status)
        self._run = None

    def __enter__(self) -> "Tracker":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")
        return False

    # -- params, metrics, tags ---------------------------------------------------------------

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        items = [
            RunTag(_truncate(str(k), MAX_KEY_LENGTH), _truncate(_to_str(v), MAX_TAG_VALUE_LENGTH))
            for k, v in tags.items()
        ]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=chunk)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Logs params, flattened and truncated. Params already on the run with the same value are
        skipped (resumed runs); a different value is kept as it was and reported with a warning."""
        if not self.active:
            return
        flat = flatten_params(params)
        existing = self._client.get_run(self.run_id).data.params
        conflicts = {k: (existing[k], v) for k, v in flat.items() if k in existing and existing[k] != v}
        if conflicts:
            _logger.warning(
                "run %s already has different values for params %s; kept the old ones", self.run_id, sorted(conflicts)
            )
        items = [Param(k, v) for k, v in flat.items() if k not in existing]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, params=chunk)

    def log_config(self, config: Mapping[str, Any] | Any, artifact_file: str = "config.yaml") -> None:
        """Logs a resolved config: flattened params (``training.optimizer.learning_rate``) and the
        YAML as the artifact ``config.yaml``. Takes a dict or a pydantic ``RunConfig``."""
        if not self.active:
            return
        data = _config_as_dict(config)
        self.log_params(data)
        self.log_text(yaml.safe_dump(data, sort_keys=False), artifact_file)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Logs numeric metrics at ``step``; ``None`` values are skipped, NaN/inf are kept."""
        if not self.active:
            return
        ts = _now_ms()
        items = []
        for key, value in metrics.items():
            if value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                _logger.warning("metric %s=%r is not a number; not logged", key, value)
                continue
            items.append(Metric(_truncate(str(key), MAX_KEY_LENGTH), number, ts, int(step or 0)))
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=chunk)

    # -- artifacts ---------------------------------------------------------------------------

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not self.active:
            return
        self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        """Saves a matplotlib figure as the artifact ``name`` (e.g. ``plots/learning_curves.png``)."""
        if not self.active:
            return
        self._client.log_figure(self.run_id, figure, name)

    def log_text(self, text: str, name: str) -> None:
        if not self.active:
            return
        self._client.log_text(self.run_id, text, name)

    def log_dict(self, dictionary: Mapping[str, Any], name: str) -> None:
        """Saves a dict as JSON or YAML (by the extension of ``name``)."""
        if not self.active:
            return
        self._client.log_dict(self.run_id, dict(dictionary), name)

    # -- models ------------------------------------------------------------------------------

    def log_model(
        self,
        keras_model: Any,
        name: str = "model",
        input_example: Any = None,
        signature: ModelSignature | None = None,
        pip_requirements: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Logs a Keras 3 model (MLflow ``keras`` flavor, ``.keras`` format) and returns its URI.

        The signature is inferred when not given: from ``input_example`` (its outputs computed with
        ``model.predict``), else from the functional model's inputs and outputs; ``tf.string``
        inputs become numpy ``object`` tensors. A list of strings as ``input_example`` is turned
        into a 1-D ``object`` array. Returns ``models:/m-<id>`` (``None`` when disabled).
        """
        if not self.active:
            return None
        example = _as_example(input_example) if input_example is not None else None
        if signature is None:
            signature = infer_keras_signature(keras_model, example)
        meta = dict(metadata or {})
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=_KERAS_FLAVOR,
            model=keras_model,
            run_id=self.run_id,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements or _pip_requirements(),
            metadata=meta or None,
        )
        return info.model_uri

    def register_model(self, model_uri: str, name: str, tags: Mapping[str, Any] | None = None) -> str | None:
        """Creates a new version of registered model ``name`` from ``model_uri``; returns the version."""
        if not self.active:
            return None
        return register_model(model_uri, name, self.tracking_uri, tags=tags)


def register_model(model_uri: str, name: str, tracking_uri: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
    """Registers ``model_uri`` (``models:/m-<id>``, ``runs:/...``) as a new version of ``name``."""
    if tracking_uri:
        configure(tracking_uri)
    mv = mlflow.register_model(model_uri, name, tags={k: _to_str(v) for k, v in (tags or {}).items()} or None)
    return str(mv.version)


# --------------------------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """What :func:`promote` decided, and from which figures."""

    promoted: bool
    champion_version_before: str | None
    champion_value_before: float | None
    candidate_value: float
    reason: str
    model_name: str = ""
    version: str = ""
    metric_name: str = ""
    alias: str = CHAMPION  # the alias the candidate got: champion or challenger

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def metric_tag(metric_name: str) -> str:
    """The model-version tag that holds a version's figure for ``metric_name``."""
    return f"metric.{metric_name}"


def version_metric(client: MlflowClient, model_name: str, version: str, metric_name: str) -> float | None:
    """A registered version's figure for ``metric_name``: its tag, else its run's last value."""
    mv = client.get_model_version(model_name, str(version))
    tagged = (mv.tags or {}).get(metric_tag(metric_name))
    if tagged is not None:
        try:
            return float(tagged)
        except ValueError:
            pass
    if mv.run_id:
        try:
            value = client.get_run(mv.run_id).data.metrics.get(metric_name)
        except MlflowException:
            value = None
        if value is not None:
            return float(value)
    return None


def _current_champion(client: MlflowClient, model_name: str):
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def promote(
    client_or_uri: MlflowClient | str,
    model_name: str,
    version: str | int,
    metric_name: str,
    value: float,
    greater_is_better: bool,
    log_to_run: bool = True,
) -> PromotionDecision:
    """Gives ``version`` the alias ``champion`` if its metric beats the current champion's, else
    ``challenger``.

    Rules: the first version (no champion yet) wins; a NaN/inf candidate never wins; a tie does not
    win; a champion with no recorded figure loses to any finite candidate. The candidate's figure is
    stored as the version tag ``metric.<metric_name>`` (plus ``promotion.*`` tags), and with
    ``log_to_run`` the decision is logged to the candidate's run (:func:`log_promotion_decision`).
    Re-promoting the current champion is a no-op that reports it as promoted.
    """
    client = _client(client_or_uri)
    version = str(version)
    candidate = float(value) if value is not None else math.nan
    champion = _current_champion(client, model_name)
    champ_version = str(champion.version) if champion is not None else None
    champ_value = version_metric(client, model_name, champ_version, metric_name) if champ_version else None
    better = "higher" if greater_is_better else "lower"

    if champ_version == version:
        promoted, reason = True, f"version {version} is already the champion"
    elif not _finite(candidate):
        promoted, reason = False, f"candidate {metric_name}={_fmt(candidate)} is not a finite number"
    elif champion is None:
        promoted, reason = True, f"no champion yet: version {version} ({metric_name}={_fmt(candidate)}) is the first"
    elif not _finite(champ_value):
        promoted, reason = True, (
            f"champion version {champ_version} has no finite {metric_name} figure "
            f"({_fmt(champ_value)}); candidate {_fmt(candidate)} takes over"
        )
    elif (candidate > champ_value) if greater_is_better else (candidate < champ_value):
        promoted, reason = True, (
            f"{metric_name} {_fmt(candidate)} beats champion version {champ_version} "
            f"({_fmt(champ_value)}; {better} is better)"
        )
    elif candidate == champ_value:
        promoted, reason = False, (
            f"{metric_name} {_fmt(candidate)} ties champion version {champ_version}; ties do not promote"
        )
    else:
        promoted, reason = False, (
            f"{metric_name} {_fmt(candidate)} does not beat champion version {champ_version} "
            f"({_fmt(champ_value)}; {better} is better)"
        )

    alias = CHAMPION if promoted else CHALLENGER
    client.set_model_version_tag(model_name, version, metric_tag(metric_name), repr(candidate))
    client.set_model_version_tag(model_name, version, "promotion.decision", alias)
    client.set_model_version_tag(model_name, version, "promotion.reason", _truncate(reason, MAX_TAG_VALUE_LENGTH))
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        try:
            if str(client.get_model_version_by_alias(model_name, CHALLENGER).version) == version:
                client.delete_registered_model_alias(model_name, CHALLENGER)
        except MlflowException:
            pass
    else:
        client.set_registered_model_alias(model_name, CHALLENGER, version)

    decision = PromotionDecision(
        promoted=promoted,
        champion_version_before=champ_version,
        champion_value_before=champ_value,
        candidate_value=candidate,
        reason=reason,
        model_name=model_name,
        version=version,
        metric_name=metric_name,
        alias=alias,
    )
    _logger.info("promotion of %s version %s: %s (%s)", model_name, version, alias, reason)
    if log_to_run:
        run_id = client.get_model_version(model_name, version).run_id
        if run_id:
            log_promotion_decision(client, run_id, decision)
    return decision


def versions_from_run(client_or_uri: MlflowClient | str, model_name: str, run_id: str) -> list:
    """The versions of ``model_name`` registered from run ``run_id`` (oldest first)."""
    client = _client(client_or_uri)
    found = client.search_model_versions(f"name={_quoted(model_name)} and run_id={_quoted(run_id)}")
    return sorted(found, key=lambda mv: int(mv.version))


def register_once(
    tracking_uri: str,
    model_uri: str,
    run_id: str,
    model_name: str,
    metric_name: str,
    value: float,
    greater_is_better: bool,
) -> tuple[str, dict[str, Any], bool]:
    """Registers ``model_uri`` (logged by run ``run_id``) as a version of ``model_name`` and
    :func:`promote`\ s it — unless ``model_name`` already has a version from that run, which is then
    reported as it is (and promoted, if a crash left it without a decision). Safe to repeat.

    Returns ``(version, decision as a dict, registered_now)``.
    """
    client = _client(tracking_uri)
    existing = versions_from_run(client, model_name, run_id)
    if not existing:
        version = register_model(model_uri, model_name, tracking_uri)
        return version, promote(client, model_name, version, metric_name, value, greater_is_better).to_dict(), True
    mv = existing[0]
    version = str(mv.version)
    tags = mv.tags or {}
    if "promotion.decision" not in tags:  # registered, then stopped before the decision
        return version, promote(client, model_name, version, metric_name, value, greater_is_better).to_dict(), False
    aliases = ", ".join(f"@{a}" for a in (client.get_model_version(model_name, version).aliases or [])) or "no alias"
    decision = {
        "promoted": tags.get("promotion.decision") == CHAMPION,
        "alias": tags.get("promotion.decision"),
        "reason": f"{tags.get('promotion.reason', '')}; it holds {aliases} now",
        "model_name": model_name,
        "version": version,
        "metric_name": metric_name,
        "candidate_value": float(value),
    }
    return version, decision, False


def log_promotion_decision(client_or_uri: MlflowClient | str, run_id: str, decision: PromotionDecision) -> None:
    """Records a promotion decision on a run: tags ``promotion.*`` (decision, reason, versions,
    metric) and metrics ``promotion.candidate_value`` / ``promotion.champion_value`` (finite ones).

    Tags, not params, so that re-running a promotion does not clash with immutable params.
    """
    client = _client(client_or_uri)
    tags = {
        "promotion.decision": decision.alias,
        "promotion.promoted": str(decision.promoted).lower(),
        "promotion.reason": decision.reason,
        "promotion.model_name": decision.model_name,
        "promotion.version": decision.version,
        "promotion.metric": decision.metric_name,
        "promotion.champion_version_before": decision.champion_version_before or "none",
        "promotion.champion_value": _fmt(decision.champion_value_before),
        "promotion.candidate_value": _fmt(decision.candidate_value),
    }
    ts = _now_ms()
    metrics = [
        Metric(key, float(v), ts, 0)
        for key, v in (
            ("promotion.candidate_value", decision.candidate_value),
            ("promotion.champion_value", decision.champion_value_before),
        )
        if _finite(v)
    ]
    client.log_batch(
        run_id,
        metrics=metrics,
        tags=[RunTag(k, _truncate(v, MAX_TAG_VALUE_LENGTH)) for k, v in tags.items()],
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _registry_miss(client: MlflowClient, store: str, model_uri: str, name: str, what: str) -> ModelNotFoundError:
    """The error for a missing version or alias of ``name``, listing what the registry does hold."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
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
