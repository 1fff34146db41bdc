"""One MLflow run as a context manager: :class:`Tracker` (params, metrics, artifacts, models), and
registering a logged model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import Model, ModelSignature

from pipelines.tracking.flavor import _KERAS_FLAVOR, _as_example, _pip_requirements, infer_keras_signature
from pipelines.tracking.params import (MAX_KEY_LENGTH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH,
                                      MAX_TAG_VALUE_LENGTH, _chunks, _config_as_dict, _now_ms, _to_str,
                                      _truncate, flatten_params)
from pipelines.tracking.store import configure, get_or_create_experiment

_logger = logging.getLogger(__name__)


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
