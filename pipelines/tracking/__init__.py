"""MLflow tracking and model registry: the only package that talks to MLflow.

Everything a run records goes through :class:`Tracker`; registry decisions go through
:func:`promote`; models come back through :func:`load_model`.

Store layout. The default tracking URI is ``sqlite:///mlflow_runs/mlflow.db``. For a sqlite store,
:func:`configure` creates the database's directory and experiments created here put their artifacts
in ``<db dir>/artifacts/<experiment>`` (so nothing lands in ``./mlruns``). A remote ``mlflow server`` decides its
own artifact location.

Models. Keras 3 models are logged with MLflow's ``keras`` flavor (a ``.keras`` file). Models that
take raw strings have a ``tf.string`` input; their signature is an MLflow ``TensorSpec`` of numpy
``object`` dtype with a dynamic batch dimension. Loading (:func:`load_model`, and the
``python_function`` loader, which is this package's, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` take the same path) never runs code from the artifact: no folder of it goes
on ``sys.path``, no module name is taken from it, a model that ships code is refused, and Keras
rebuilds only its own classes and rnnflow's installed ones (:mod:`keras_models.saving`).

Registry. Versions are promoted with aliases (``champion``, ``challenger``), never with the
deprecated stages. A candidate becomes ``champion`` only when its metric strictly beats the current
champion's; the figure used for each version is stored on the version as the tag
``metric.<metric name>``. Promotions of one registered model are serialised across machines by a lock
held in the registry (:mod:`~pipelines.tracking.lease`).

Multi-worker training: only the chief logs; other workers make ``Tracker(..., enabled=False)``, whose
methods do nothing and write nothing.

Modules: :mod:`~pipelines.tracking.store` (store set-up, experiments), :mod:`~pipelines.tracking.params`
(params and MLflow's limits), :mod:`~pipelines.tracking.flavor` (signatures, the Keras flavor, the
``python_function`` loader), :mod:`~pipelines.tracking.tracker` (:class:`Tracker`),
:mod:`~pipelines.tracking.registry` (promotion, registering once), :mod:`~pipelines.tracking.loading`
(URIs, loading). This package re-exports their public names, and ``_load_pyfunc``: MLmodel files
name ``pipelines.tracking`` as their ``python_function`` loader.
"""

from pipelines.tracking.flavor import PYFUNC_LOADER, KerasPyfunc, _load_pyfunc, infer_keras_signature
from pipelines.tracking.loading import ResolvedModel, load_logged_model, load_model, local_path, resolve_model_uri
from pipelines.tracking.params import MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, flatten_params
from pipelines.tracking.registry import (CHALLENGER, CHAMPION, PromotionDecision, log_promotion_decision, metric_tag,
                                         promote, register_once, version_metric, versions_from_run)
from pipelines.tracking.store import (configure, configure_http, default_artifact_location, experiment_artifact_location,
                                      get_or_create_experiment, metric_history)
from pipelines.tracking.tracker import Tracker, register_model

__all__ = [
    "CHALLENGER", "CHAMPION", "MAX_KEY_LENGTH", "MAX_PARAM_VALUE_LENGTH", "MAX_TAG_VALUE_LENGTH", "PYFUNC_LOADER",
    "KerasPyfunc", "PromotionDecision", "ResolvedModel", "Tracker", "_load_pyfunc", "configure", "configure_http",
    "default_artifact_location", "experiment_artifact_location", "flatten_params", "get_or_create_experiment",
    "infer_keras_signature", "load_logged_model", "load_model", "local_path", "log_promotion_decision",
    "metric_history", "metric_tag", "promote", "register_model", "register_once", "resolve_model_uri",
    "version_metric", "versions_from_run",
]
