"""What the training benchmarks share: one ``rnnflow train`` in a throw-away work directory, timed."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def training_parser(doc: str, config_help: str) -> argparse.ArgumentParser:
    """The arguments every training benchmark takes: the config, ``--set`` overrides, ``--output``, ``--keep``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. --set training.epochs=1")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (default: a temp dir)")
    return parser


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def train_timed(config_path: str, overrides: list[str], keep: bool = False):
    """Prepares (or reuses) the data and trains ``config_path`` afresh in a temporary work directory
    with its own MLflow store (``rnnflow train``: no registry).

    Returns ``(config, result, timings)`` with ``timings`` the prepare and train+evaluate seconds.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipelines.config import load_config
    from pipelines.prepare import prepare
    from pipelines.run import execute

    work = Path(tempfile.mkdtemp(prefix="rnnflow-bench-"))
    config = load_config(config_path, [f"work_dir={work / 'run'}", f"tracking.tracking_uri=sqlite:///{work}/mlflow.db",
                                       *overrides])
    try:
        start = time.perf_counter()
        prepare(config.data)
        prepared = time.perf_counter()
        result = execute(config, register=False, force=True)
        finished = time.perf_counter()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    timings = {"prepare_s (reused if prepared before)": round(prepared - start, 1),
               "train_and_evaluate_s": round(finished - prepared, 1)}
    return config, result, timings


def metric_history(config, result, key: str) -> list[float]:
    """``key`` after each epoch, read back from the run's MLflow store (the final evaluation, logged at
    step ``epochs + 1``, left out); empty without a store."""
    if not result.mlflow_run_id:
        return []
    from pipelines.tracking import metric_history as history

    epochs = int(result.metrics.get("epochs_completed", 0))
    return [round(v, 4) for v in history(config.tracking.tracking_uri, result.mlflow_run_id, key, last_step=epochs)]


def write_report(report: dict, output: str | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
