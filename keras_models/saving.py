"""Loading a saved model without running any code that came with it.

A ``.keras`` file is a zip of ``config.json`` (which classes to build, with which arguments) and the
weights. Keras rebuilds every object the config names; rnnflow lets it build only

- Keras' own classes and built-in functions (module ``keras`` / ``keras.*``, functions of module
  ``builtins`` such as ``"tanh"``), and
- rnnflow's own layers and models: the classes registered with
  ``register_keras_serializable(package="rnnflow")`` by the modules of this installed package
  (imported by :func:`rnnflow_objects`, a fixed list), found by importing them here: the allow-list
  (:func:`rnnflow_objects`). Such an object may name any module of rnnflow's own packages
  (``keras_models``, ``preprocessing``, ``pipelines``), so that a model saved before a class moved
  between rnnflow's modules still loads; Keras finds it by its registered name.

Anything else in the config — a class registered by another package, a module name outside Keras
and rnnflow, a registered name that is not rnnflow's — is refused *before* Keras reads the file, with
:class:`UnsafeModelError` naming the class. Keras itself loads with ``safe_mode=True``, which refuses
``Lambda`` layers holding Python bytecode. Nothing is imported because a file names it, and no
folder of the artifact is put on ``sys.path``.

Example:
    >>> from keras_models.saving import load_model
    >>> scorer = load_model("runs/quickstart/<key>/outputs/<key>/model/scorer.keras")
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import keras

PACKAGE = "rnnflow"
_OWN_PACKAGES = ("keras_models", "preprocessing", "pipelines")
# A module name inside rnnflow's own packages: what a config may say an rnnflow class comes from.
# Classes move between rnnflow's modules (``keras_models.tagger`` became
# ``keras_models.models.tagger``); Keras finds an rnnflow class by its registered name, never by
# this module, which is only checked, not imported.
_OWN_MODULE = re.compile(rf"(?:{'|'.join(_OWN_PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
# Plain values Keras serializes as objects (tensors, arrays, bytes, slices): data, not code.
_VALUE_CLASSES = {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__",
                  "__typespec__"}


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message names it and what to do (the CLI prints it on one line)."""


class ModelNotFoundError(ModelLoadError, LookupError):
    """No model where one was asked for (a path, a run, a registry version or alias)."""


class UnsafeModelError(ModelLoadError):
    """A saved model that names an object rnnflow does not allow, ships code, or is not a model file."""


def rnnflow_objects() -> dict[str, type]:
    """The allow-list: ``{"rnnflow>ClassName": class}`` for every class rnnflow registers itself."""
    _import_rnnflow_classes()
    return {
        name: obj
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith(f"{PACKAGE}>") and getattr(obj, "__module__", "").split(".", 1)[0] in _OWN_PACKAGES
    }


def _import_rnnflow_classes() -> None:
    """Imports the modules that define rnnflow's serializable Keras objects, so that their
    ``register_keras_serializable`` decorators have run (a fixed list: nothing is imported by name)."""
    from keras_models import export
    from keras_models.layers import attention, cells, crf, pooling, recurrent
    from keras_models.models import classifier, language_model, seq2seq, tagger

    del export, attention, cells, crf, pooling, recurrent, classifier, language_model, seq2seq, tagger


def _objects(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every serialized object (a mapping with ``class_name``) in a Keras config, depth first."""
    if isinstance(node, Mapping):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _objects(value)


def _describe(obj: Mapping[str, Any]) -> str:
    parts = [f"class {obj.get('class_name')!r}"]
    if obj.get("module"):
        parts.append(f"module {obj.get('module')!r}")
    if obj.get("registered_name"):
        parts.append(f"registered as {obj.get('registered_name')!r}")
    return ", ".join(parts)


def check_config(config: Mapping[str, Any], source: str, allowed: Mapping[str, type] | None = None) -> None:
    """Raises :class:`UnsafeModelError` if ``config`` (a ``.keras`` file's ``config.json``) names an
    object outside Keras and rnnflow's allow-list; ``source`` names the file in the message."""
    allowed = rnnflow_objects() if allowed is None else allowed
    for obj in _objects(config):
        class_name = obj.get("class_name")
        module = obj.get("module")
        registered = obj.get("registered_name")
        if not isinstance(class_name, str) or not (module is None or isinstance(module, str)):
            raise UnsafeModelError(f"{source}: malformed object in the model config: {_describe(obj)}")
        if registered is not None and not isinstance(registered, str):
            raise UnsafeModelError(f"{source}: malformed object in the model config: {_describe(obj)}")
        if class_name in _VALUE_CLASSES:
            continue
        if class_name == "__lambda__":
            raise UnsafeModelError(f"{source}: the model holds a Python lambda (Lambda layer); refusing to load it")
        own = registered in allowed or class_name in allowed  # functions keep "package>name" in class_name
        if own:
            cls = allowed.get(registered) or allowed.get(class_name)
            # Any module of rnnflow's own packages (an earlier rnnflow may have defined the class
            # elsewhere), never a module outside them.
            if module is not None and not _OWN_MODULE.fullmatch(module):
                raise UnsafeModelError(
                    f"{source}: {_describe(obj)} does not match rnnflow's {registered or class_name} "
                    f"(defined in {cls.__module__}; a saved rnnflow class names a module of "
                    f"{', '.join(_OWN_PACKAGES)}); refusing to load"
                )
            continue
        builtin = module is not None and (module == "keras" or module.startswith("keras.") or module == "builtins")
        if builtin and registered in (None, class_name) and ">" not in class_name:
            continue
        raise UnsafeModelError(
            f"{source}: the model needs {_describe(obj)}, which is neither a Keras class nor one of "
            f"rnnflow's layers ({', '.join(sorted(n.split('>', 1)[1] for n in allowed))}); refusing to load it. "
            "rnnflow loads only its own, installed classes and never code shipped with a model"
        )


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a ``.keras`` file; :class:`UnsafeModelError` if it is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise UnsafeModelError(f"{path}: not a .keras model file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("config.json")
    except KeyError:
        raise UnsafeModelError(f"{path}: not a .keras model file (no config.json inside)") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise UnsafeModelError(f"{path}: damaged .keras file ({err})") from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UnsafeModelError(f"{path}: damaged .keras file: config.json is not JSON ({err})") from None
    if not isinstance(config, dict):
        raise UnsafeModelError(f"{path}: damaged .keras file: config.json is not a JSON object")
    return config


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` file built only from Keras' and rnnflow's own classes (see the module doc).

    Raises:
        ModelNotFoundError: no such file.
        UnsafeModelError: not a ``.keras`` file, or it names a class rnnflow does not allow; also
            Keras' own ``safe_mode`` refusals (``Lambda`` layers with bytecode).
    """
    path = os.fspath(path)
    allowed = rnnflow_objects()
    check_config(read_config(path), path, allowed)
    try:
        return keras.saving.load_model(path, custom_objects=dict(allowed), compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower():
            raise UnsafeModelError(f"{path}: {err}") from None
        raise
