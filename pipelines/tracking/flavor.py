"""Keras models in MLflow: tensor signatures (``tf.string`` inputs as numpy ``object``), the
``keras`` flavor as rnnflow saves it (no code, rnnflow's own ``python_function`` loader) and that
loader, :class:`KerasPyfunc`, used by ``mlflow.pyfunc.load_model`` and ``mlflow models serve``."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import Schema, TensorSpec

# The module MLflow imports to load a model as python_function (recorded in every MLmodel rnnflow writes;
# models logged by earlier versions name it too): pipelines/tracking/__init__.py re-exports _load_pyfunc.
PYFUNC_LOADER = "pipelines.tracking"


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
        return _with_symbolic_output_shapes(model, example, signature)
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


def _with_symbolic_output_shapes(model: Any, example: Any, signature: ModelSignature) -> ModelSignature:
    """``signature`` with the output axes that the model leaves open made dynamic (``-1``).

    Shapes inferred from one example fix every axis but the batch to the example's sizes (a
    tagger's ``tokens`` / ``tags`` would claim the example's token count). The model's own output
    spec for an input of unknown batch (``compute_output_spec``) tells which axes vary; where it
    cannot be computed, or does not match, the example's shapes are kept.
    """
    import keras

    if not isinstance(example, np.ndarray) or signature.outputs is None:
        return signature
    dtype = "string" if example.dtype == object else example.dtype.name
    try:
        spec = model.compute_output_spec(keras.KerasTensor((None, *example.shape[1:]), dtype=dtype))
    except Exception:  # noqa: BLE001 - a model that cannot be traced symbolically keeps the example's shapes
        return signature
    specs = spec if isinstance(spec, Mapping) else {None: spec}
    outputs = []
    for tensor in signature.outputs.inputs:
        symbolic = specs.get(tensor.name)
        shape = list(tensor.shape)
        if symbolic is not None and len(symbolic.shape) == len(shape):
            shape = [-1 if d is None else s for d, s in zip(symbolic.shape, shape)]
        outputs.append(TensorSpec(tensor.type, shape, name=tensor.name))
    return ModelSignature(inputs=signature.inputs, outputs=Schema(outputs), params=signature.params)


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
    becomes ``pipelines.tracking`` (:func:`_load_pyfunc`), which loads through ``load_logged_model``:
    rnnflow's own classes only, nothing imported from the artifact.
    """
    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)
    mlflow_model: Model = kwargs["mlflow_model"]
    mlflow_model.flavors.get("python_function", {})["loader_module"] = PYFUNC_LOADER
    mlflow_model.save(os.path.join(path, "MLmodel"))


_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_flavor)


def _load_pyfunc(path: str) -> "KerasPyfunc":
    """``python_function`` loader (``mlflow.pyfunc.load_model``, ``mlflow models serve``): the model
    through :func:`~pipelines.tracking.loading.load_logged_model`."""
    from pipelines.tracking.loading import load_logged_model

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
        _check_text_batch(data)
        outputs = self.model.predict(data, verbose=0)
        if isinstance(outputs, Mapping):
            return {k: _decoded(np.asarray(v)) for k, v in outputs.items()}
        return _decoded(np.asarray(outputs))


def _check_text_batch(data: Any) -> None:
    """A batch of texts (a numpy ``object`` array, as MLflow gives string inputs) must hold strings
    and be a batch: anything else is the caller's error (``INVALID_PARAMETER_VALUE``, a 400 from
    ``mlflow models serve``), said plainly instead of a failure deep in the model."""
    if not isinstance(data, np.ndarray) or data.dtype != object:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    if data.ndim == 0:
        raise MlflowException(f"expected a batch (a list) of texts, got the single value {data.item()!r}",
                              error_code=INVALID_PARAMETER_VALUE)
    for x in data.flat:
        if not isinstance(x, (str, bytes)):
            raise MlflowException(f"expected texts (strings), got {type(x).__name__} {x!r}",
                                  error_code=INVALID_PARAMETER_VALUE)


def _decoded(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "S" or (array.dtype == object and array.size and isinstance(array.flat[0], bytes)):
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b, otypes=[object])(array)
    return array
