"""MLflow tracking and model registry: the only module that talks to MLflow.

Everything a run records goes through :class:`Tracker`; registry decisions go through
:func:`promote`; models come back through :func:`load_model` / :func:`load_champion`.

Store layout. The default tracking URI is ``sqlite:///mlflow_runs/mlflow.db``. For a sqlite store,
:func:`configure` creates the database's directory and experiments created here put their artifacts
in ``<db dir>/artifacts/<experiment>`` (so nothing lands in ``./mlruns``). A remote ``mlflow server`` decides its
own artifact location.

Models. Keras 3 models are logged with MLflow's ``keras`` flavor (a ``.keras`` file). Models that
take raw strings have a ``tf.string`` input; their signature is an MLflow ``TensorSpec`` of numpy
``object`` dtype with a dynamic batch dimension. The modules that define custom (registered) Keras
objects used by the model are recorded in the MLmodel metadata (``rnnflow_custom_modules``) and are
imported before loading, both by :func:`load_model` and by the model's ``python_function`` loader
(which then is this module), because Keras only finds registered classes whose module was imported.

Registry. Versions are promoted with aliases (``champion``, ``challenger``), never with the
deprecated stages. A candidate becomes ``champion`` only when its metric strictly beats the current
champion's; the figure used for each version is stored on the version as the tag
``metric.<metric name>``.

Multi-worker training: only the chief logs; other workers make ``Tracker(..., enabled=False)``, whose
methods do nothing and write nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import math
import os
import re
import shutil
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

_logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"

# MLflow's limits (mlflow.utils.validation); values beyond them are truncated here, not rejected.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

CUSTOM_MODULES_METADATA_KEY = "rnnflow_custom_modules"
_BUILTIN_PACKAGES = {"keras", "builtins", "numpy", "tensorflow", "tf_keras", "keras_hub", "keras_nlp"}


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


def custom_modules(model: Any) -> list[str]:
    """Modules outside Keras that define objects in the model's saved config (sorted, unique).

    These are the modules whose ``register_keras_serializable`` decorators must have run before
    ``keras.saving.load_model`` can rebuild the model.
    """
    import keras

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            module = node.get("module")
            if isinstance(module, str) and "class_name" in node:
                if module.split(".", 1)[0] not in _BUILTIN_PACKAGES:
                    found.add(module)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(keras.saving.serialize_keras_object(model))
    return sorted(found)


def import_custom_modules(modules: Iterable[str]) -> None:
    """Imports each module so that its registered Keras objects are known (warns on failure)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - loading will then fail with Keras' own message
            _logger.warning("could not import %s, which defines objects of the model: %s", module, err)


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


def _save_keras_flavor(path: str, *, code_paths: list[str] | None = None, **kwargs: Any) -> None:
    """``mlflow.keras.save_model`` made to work for ``Model.log`` with an input example and code.

    mlflow 3.17's keras flavor writes the input example before creating the model directory, so the
    directory is created first. The flavor takes no ``code_paths``: they are copied to ``code/``
    and recorded in the ``python_function`` flavor (which puts them on ``sys.path`` when loading).
    When the model uses custom modules, its ``python_function`` loader becomes this module, which
    imports them and then hands over to ``mlflow.keras``.
    """
    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)
    mlflow_model: Model = kwargs["mlflow_model"]
    pyfunc_conf = mlflow_model.flavors.get("python_function", {})
    changed = False
    if code_paths:
        code_dir = os.path.join(path, "code")
        os.makedirs(code_dir, exist_ok=True)
        for src in code_paths:
            dst = os.path.join(code_dir, os.path.basename(os.path.normpath(src)))
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dst)
        pyfunc_conf["code"] = "code"
        mlflow_model.flavors["keras"]["code"] = "code"
        changed = True
    if (mlflow_model.metadata or {}).get(CUSTOM_MODULES_METADATA_KEY):
        pyfunc_conf["loader_module"] = __name__
        changed = True
    if changed:
        mlflow_model.save(os.path.join(path, "MLmodel"))


_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_flavor)


def _load_pyfunc(path: str) -> Any:
    """``python_function`` loader for Keras models with custom objects (see :func:`_save_keras_flavor`)."""
    model_conf = Model.load(os.path.join(path, "MLmodel"))
    _prepare_for_load(path, model_conf)
    from mlflow.keras.load import _load_pyfunc as keras_load_pyfunc

    return keras_load_pyfunc(path)


def _prepare_for_load(local_path: str, model_conf: Model) -> None:
    code = model_conf.flavors.get("keras", {}).get("code") or model_conf.flavors.get("python_function", {}).get("code")
    if code:
        code_dir = os.path.abspath(os.path.join(local_path, code))
        if os.path.isdir(code_dir) and code_dir not in sys.path:
            sys.path.insert(0, code_dir)
    import_custom_modules((model_conf.metadata or {}).get(CUSTOM_MODULES_METADATA_KEY, []))


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
        code_paths: list[str] | None = None,
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
        modules = custom_modules(keras_model)
        if modules:
            meta[CUSTOM_MODULES_METADATA_KEY] = modules
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
            code_paths=list(code_paths) if code_paths else None,
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


def resolve_model_uri(model_uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Resolves ``models:/name@alias``, ``models:/name/<version|latest>`` and ``models:/m-<id>``;
    other URIs (``runs:/``, paths) come back as they are (with the run id of a ``runs:/`` URI)."""
    client = _client(tracking_uri)
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/") :].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            try:
                mv = client.get_model_version_by_alias(name, alias)
            except MlflowException as err:
                raise LookupError(f"{model_uri}: registered model {name!r} has no alias {alias!r}") from err
        elif "/" in rest:
            name, ver = rest.split("/", 1)
            if ver == "latest":
                versions = client.search_model_versions(f"name='{name}'")
                if not versions:
                    raise LookupError(f"{model_uri}: registered model {name!r} has no versions")
                mv = max(versions, key=lambda v: int(v.version))
            else:
                mv = client.get_model_version(name, ver)
        else:  # a logged model id (models:/m-<id>)
            logged = client.get_logged_model(rest)
            return ResolvedModel(uri=model_uri, run_id=logged.source_run_id, source=logged.artifact_location)
        return ResolvedModel(
            uri=f"models:/{mv.name}/{mv.version}", name=mv.name, version=str(mv.version), run_id=mv.run_id, source=mv.source
        )
    if model_uri.startswith("runs:/"):
        run_id = model_uri[len("runs:/") :].split("/", 1)[0]
        return ResolvedModel(uri=model_uri, run_id=run_id, source=model_uri)
    return ResolvedModel(uri=model_uri, source=model_uri)


def load_model(model_uri: str, tracking_uri: str | None = None, dst_path: str | None = None) -> Any:
    """Loads a Keras model logged by :meth:`Tracker.log_model` (any MLflow model URI or path).

    The model's custom modules (recorded at logging time) are imported first, and its ``code/``
    directory, if any, is put on ``sys.path``.
    """
    import mlflow.keras

    if tracking_uri:
        configure(tracking_uri)
    resolved = resolve_model_uri(model_uri, tracking_uri) if model_uri.startswith("models:/") else ResolvedModel(model_uri)
    with tempfile.TemporaryDirectory() if dst_path is None else _nullcontext(dst_path) as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=tmp)
        model_conf = Model.load(os.path.join(local, "MLmodel"))
        _prepare_for_load(local, model_conf)
        return mlflow.keras.load_model(local)


class _nullcontext:
    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *exc: Any) -> bool:
        return False


def load_champion(model_name: str, tracking_uri: str | None = None, alias: str = CHAMPION) -> Any:
    """The Keras model behind ``models:/<model_name>@champion`` (or another alias)."""
    return load_model(f"models:/{model_name}@{alias}", tracking_uri)


def download_artifacts(run_id: str, artifact_path: str, tracking_uri: str | None = None, dst_path: str | None = None) -> str:
    """Downloads a run's artifact (file or directory) and returns the local path."""
    client = _client(tracking_uri)
    return client.download_artifacts(run_id, artifact_path, dst_path)
