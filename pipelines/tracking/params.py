"""Turning configs and values into what MLflow takes: flattened params, MLflow's length and batch
limits, finite checks, timestamps."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

# MLflow's limits (mlflow.utils.validation); values beyond them are truncated here, not rejected.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


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
