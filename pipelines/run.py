"""The scheduled run: prepare → train → evaluate → register / promote, safe to re-run.

A run's work directory (``runs/<name>`` unless ``work_dir`` says otherwise) holds one folder per
*training key*; inside it ``checkpoints/``, ``state.json`` and one ``outputs/<output key>/`` folder
per set of evaluation / export settings (``model/*.keras``, ``plots/``).

What is hashed (:func:`training_settings`, :func:`output_settings`):

- training key: the ``model`` and ``training`` sections, ``tracking.metric`` and
  ``tracking.greater_is_better`` (they pick the best epoch and stop early), the prepared data's
  fingerprint (which covers the ``data`` section and the sources), and for seq2seq
  ``decode.max_length`` (validation during training decodes with it);
- output key: ``generate`` and the rest of ``decode`` (beam size, length penalty, attention samples);
- neither: ``name``, ``work_dir``, ``tracking.tracking_uri`` / ``experiment`` / ``registered_model``.

So:

- re-running a finished run with the same settings trains nothing and reports the result; ``run``
  registers (and promotes) it if the registered model has no version from that MLflow run yet
  (after ``rnnflow train``, or with another ``tracking.registered_model``); a second ``run`` adds
  nothing;
- changed output settings (or another tracking store): the trained weights are evaluated, exported
  and sampled again, in a new MLflow run (tagged ``rnnflow.trained_by_run``, with the training's
  history), and registered from it;
- re-running after a kill resumes training from the last checkpoint, in the same MLflow run;
- changed data (a new fingerprint) or a changed training setting gives a new key and a fresh training;
- two runs on the same work directory at once: the second finds the lock taken and exits with
  :data:`EXIT_LOCKED` instead of clobbering the first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig, dump_config
from pipelines.run_state import RunLock, read_state, write_state

log = logging.getLogger("rnnflow")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


@dataclass
class RunResult:
    run_key: str
    data_dir: str
    mlflow_run_id: str | None
    metrics: dict[str, float]
    sample: str
    model_path: str
    model_uri: str | None = None
    registered_version: str | None = None
    promotion: dict[str, Any] | None = None
    reused: bool = False
    resumed_from_step: int | None = None
    output_key: str = ""
    registered_before: bool = False  # the version existed already (registered by an earlier run of this config)
    items_dir: str = ""  # per-item statistics of the held-out splits (items-<split>.npz), for promotion


@dataclass(frozen=True)
class RunPaths:
    """Where one run writes: ``train`` = ``<work_dir>/<training key>`` (checkpoints, ``state.json``),
    ``out`` = ``<train>/outputs/<output key>`` (exported model, plots). ``replay``: the weights were
    trained by an earlier MLflow run, whose history is logged again to this one."""

    train: Path
    output_key: str
    replay: bool = False

    @property
    def key(self) -> str:
        return self.train.name

    @property
    def out(self) -> Path:
        return self.train / "outputs" / self.output_key


def _training_decode_fields(config: RunConfig) -> tuple[str, ...]:
    """``decode`` settings that change the trained weights (the task's): e.g. seq2seq validation
    during training decodes greedily up to ``decode.max_length``, and its WER picks the best epoch."""
    from pipelines import tasks

    return tasks.get(config.data.task).training_decode_fields


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def training_settings(config: RunConfig, data_fingerprint: str) -> dict[str, Any]:
    """Everything that changes the trained weights: the model, training and the data's fingerprint,
    the metric that picks the best epoch and stops early (``tracking.metric`` and its direction),
    and per task the decode settings used by validation during training."""
    decode = config.decode.model_dump(mode="json")
    return {
        "model": config.model.model_dump(mode="json"),
        "training": config.training.model_dump(mode="json"),
        "monitor": {"metric": config.tracking.metric, "greater_is_better": config.tracking.greater_is_better},
        "decode": {k: decode[k] for k in _training_decode_fields(config)},
        "data": data_fingerprint,
    }


def output_settings(config: RunConfig) -> dict[str, Any]:
    """What changes only the evaluation, export and sample of trained weights: ``generate`` and the
    rest of ``decode`` (beam size, length penalty, attention samples)."""
    decode = config.decode.model_dump(mode="json")
    return {
        "generate": config.generate.model_dump(mode="json"),
        "decode": {k: v for k, v in decode.items() if k not in _training_decode_fields(config)},
    }


def run_key(config: RunConfig, data_fingerprint: str) -> str:
    """The training key: names ``<work_dir>/<key>/``, which holds the checkpoints."""
    return _digest(training_settings(config, data_fingerprint))


def output_key(config: RunConfig) -> str:
    """The output key: names ``<work_dir>/<training key>/outputs/<key>/`` (model, plots)."""
    return _digest(output_settings(config))


def train(config: RunConfig, data_dir: Path, *, strategy, tracker, work: "RunPaths", register: bool) -> RunResult:
    """The one training path of every task (``pipelines.tasks``): load the prepared data → build the
    model → fit under ``strategy`` (checkpoints, resume, early stopping) → evaluate valid / test →
    export (raw strings in) → sample → plots and reports → log the model → register / promote.
    Everything is logged through ``tracker``; a non-chief worker stops after evaluating."""
    import keras

    from pipelines import tasks
    from preprocessing.manifest import load_manifest

    task = tasks.get(config.data.task)
    manifest = load_manifest(data_dir)
    data = task.load(config, data_dir, manifest)
    for path, folder in data.artifacts:
        tracker.log_artifact(path, folder)
    tracker.log_artifact(data_dir / "manifest.json", "data")
    tracker.log_params({"data.fingerprint": manifest.fingerprint, **data.params, "run.key": work.key,
                        "run.replicas": strategy.num_replicas_in_sync})

    keras.utils.set_random_seed(config.training.seed)
    trainer = None

    def epoch() -> int:  # the epoch being validated (1-based)
        return int(trainer.counters.epoch.numpy()) + 1

    validate = task.validator(config, data, tracker, epoch)
    trainer = _trainer(config, strategy, tracker, work, build_model=lambda: task.build_model(config, data),
                       task=task.training_task(config), data=task.train_data(config, data), evaluate=validate,
                       default_monitor=task.metric)
    result = trainer.fit()
    model = trainer.model

    metrics = task.evaluate(config, data, model)
    _log_final_metrics(metrics, result, tracker, work)
    out = RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=None,
                    metrics=metrics, sample="", model_path="", resumed_from_step=result.resumed_from_step)
    if not tracker.enabled:  # a non-chief worker: the chief exports, plots, logs and registers
        return out

    out.items_dir = _log_item_stats(config, task, data, model, tracker, work)
    export = task.export(config, data, model)
    model_dir = work.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / task.model_file
    export.save(model_path)
    input_text, sample = task.sample(config, data, export)
    log.info("sample: %s", sample)
    tracker.log_text(sample, "samples/sample.txt")

    _log_training(config, result, tracker, work, task.curve_keys, task.title(config), task.figures(config, data, model))
    task.log_reports(config, data, tracker)

    out.mlflow_run_id, out.sample, out.model_path = tracker.run_id, sample, str(model_path)
    _log_and_register(config, tracker, export, [input_text], out, register)
    return out


# ------------------------------------------------------------------------ shared by every task
def _trainer(config: RunConfig, strategy, tracker, work: "RunPaths", *, build_model, task, data, evaluate,
             default_monitor: str):
    """The one training entry, wired to the config, the work directory's checkpoints and MLflow."""
    from keras_models.training import Trainer

    def on_step(step, metrics):
        tracker.log_metrics({f"step/{k}": v for k, v in metrics.items()}, step=step)

    def on_epoch(epoch, metrics):
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)

    return Trainer(
        strategy=strategy, build_model=build_model, task=task, data=data, settings=config.training,
        evaluate=evaluate, monitor=_monitor(config, default_monitor),
        greater_is_better=bool(config.tracking.greater_is_better), checkpoint_dir=str(work.train / "checkpoints"),
        on_step=on_step, on_epoch=on_epoch,
    )


def _monitor(config: RunConfig, default: str) -> str:
    """The validation metric early stopping and the best weights watch: ``tracking.metric`` without its split."""
    metric = config.tracking.metric or default
    for prefix in ("val_", "test_"):
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def _log_final_metrics(metrics: dict, result, tracker, work: "RunPaths") -> None:
    """Adds ``epochs_completed`` and logs the final evaluation after the per-epoch values of the same names.

    A new MLflow run over weights trained by an earlier one (``work.replay``: other evaluation or
    export settings) first gets the training's per-step and per-epoch history, so that its learning
    curves are complete."""
    if work.replay:
        steps = result.steps.get("step", [])
        for i, step in enumerate(steps):
            tracker.log_metrics({f"step/{k}": v[i] for k, v in result.steps.items() if k != "step" and i < len(v)},
                                step=int(step))
        for i, epoch in enumerate(result.history.get("epoch", [])):
            tracker.log_metrics({k: v[i] for k, v in result.history.items() if k != "epoch" and i < len(v)},
                                step=int(epoch))
    metrics["epochs_completed"] = result.epochs_completed
    log.info("evaluation: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    tracker.log_metrics(metrics, step=result.epochs_completed + 1)


def _log_training(config: RunConfig, result, tracker, work: "RunPaths", curve_keys: tuple, title: str,
                  extra_figures: dict) -> None:
    """Learning curves (train / val loss, ``curve_keys``, learning rate), gradient norms and
    ``extra_figures`` to ``<outputs>/plots`` and MLflow, and the history as ``history.json``."""
    from pipelines import plots

    keys = ("train_loss", "val_loss", "learning_rate", *curve_keys)
    steps = result.steps.get("step", [])
    figures = {
        "learning_curves": plots.learning_curves(
            {k.removeprefix("train_"): v for k, v in result.history.items() if k in keys},
            step_history={"train loss (per step)": (steps, result.steps.get("train_loss", []))},
            title=f"{config.name}: {title}"),
        "gradient_norms": plots.gradient_norms(steps, result.steps.get("grad_norm", []),
                                                clip_norm=config.training.clip_norm),
        **extra_figures,
    }
    plot_dir = work.out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(plot_dir / f"{name}.png", dpi=100)
        tracker.log_figure(fig, f"plots/{name}.png")
    tracker.log_dict({"history": result.history, "steps": result.steps}, "history.json")


def _log_item_stats(config: RunConfig, task, data, model, tracker, work: "RunPaths") -> str:
    """Saves and logs (``evaluation/items-<split>.npz``) the per-item statistics of the held-out splits,
    which a later candidate is paired with when it is compared to this model; returns their folder
    (``""`` for a task that records none)."""
    from pipelines.tracking.comparison import ITEMS_FOLDER, items_artifact

    try:
        items = task.item_stats(config, data, model)
    except NotImplementedError as error:
        log.warning("no per-item statistics (%s): promotion compares this model by its figure", error)
        return ""
    folder = work.out / ITEMS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split, stats in items.items():
        path = work.out / items_artifact(split)
        stats.save(path)
        tracker.log_artifact(path, ITEMS_FOLDER)
    return str(folder)


def promotion_rule(config: RunConfig, items_dir: str):
    """The config's promotion rule, with the candidate's statistics of ``tracking.metric``'s split."""
    from pipelines.tasks.base import metric_split
    from pipelines.tracking.comparison import PromotionRule, items_artifact

    try:
        split, statistic = metric_split(config.tracking.metric)
    except ValueError:
        split, statistic = "valid", config.tracking.metric
    candidate = str(Path(items_dir).parent / items_artifact(split)) if items_dir else None
    p = config.promotion
    return PromotionRule(rule=p.rule, confidence=p.confidence, samples=p.samples, seed=p.seed, min_items=p.min_items,
                         split=split, statistic=statistic, candidate_items=candidate)


def _log_and_register(config: RunConfig, tracker, export_model, input_example, out: "RunResult", register: bool):
    """Logs the exported model; with ``register``, registers it (once per registered model and run)
    and promotes it only if it beats the champion."""
    out.model_uri = tracker.log_model(export_model, "model", input_example=input_example)
    if register and out.model_uri:
        register_result(config, out)


def register_result(config: RunConfig, out: "RunResult") -> None:
    """Registers ``out``'s model as a version of ``tracking.registered_model`` and promotes it, unless
    that registered model already has a version from ``out``'s MLflow run: then that version is
    reported as it is (idempotent; nothing is registered twice). Fills ``out.registered_version``,
    ``out.promotion`` and ``out.registered_before``."""
    from pipelines import tracking

    name = config.tracking.registered_model
    if not name or not out.model_uri or not out.mlflow_run_id:
        return
    value = out.metrics.get(config.tracking.metric)
    if value is None:
        raise KeyError(f"tracking.metric {config.tracking.metric!r} is not one of {sorted(out.metrics)}")
    version, decision, new = tracking.register_once(
        config.resolved_tracking_uri(), out.model_uri, out.mlflow_run_id, name, config.tracking.metric, value,
        bool(config.tracking.greater_is_better), rule=promotion_rule(config, out.items_dir))
    out.registered_version, out.promotion, out.registered_before = version, decision, not new
    log.info("%s version %s: %s", name, version, decision.get("reason", ""))


def _configure_http(config: RunConfig) -> None:
    from pipelines import tracking

    tracking.configure_http(config.tracking.http_retries, config.tracking.http_backoff, config.tracking.http_timeout_s)


def _run_exists(tracking_uri: str, run_id: str | None) -> bool:
    """Whether ``run_id`` is a run of the store (a finished output is reused only where it was recorded)."""
    if not run_id:
        return False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines import tracking

    tracking.configure(tracking_uri)
    try:
        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def execute(config: RunConfig, *, beam_args: list[str] | None = None, register: bool = True,
            force: bool = False) -> RunResult:
    """``rnnflow run`` (``register=True``) and ``rnnflow train`` (``register=False``).

    Reuse (see the module docstring): a finished training (same training key) is never trained
    again; its outputs (evaluation, export, sample) are reused when the output key and the store
    are the same, else made again from the trained weights in a new MLflow run. ``run`` then
    registers the model unless the registered model already has a version from that MLflow run.
    """
    from keras_models.strategies import is_chief, make_strategy, task_info
    from pipelines.prepare import prepare
    from pipelines.tracking import Tracker
    from preprocessing.manifest import load_manifest

    strategy = make_strategy(config.training.strategy, config.training.devices)  # first: multi-worker needs it
    chief = is_chief(strategy)
    task_type, task_id = task_info(strategy)
    work_dir = config.resolved_work_dir
    lock_name = ".lock" if chief else f".lock.{task_type}-{task_id}"
    with RunLock(work_dir, lock_name):
        data_dir = prepare(config.data, beam_args=beam_args)
        manifest = load_manifest(data_dir)
        train_dir = work_dir / run_key(config, manifest.fingerprint)
        okey = output_key(config)
        train_dir.mkdir(parents=True, exist_ok=True)
        state_path = train_dir / "state.json"
        state = read_state(state_path)
        if force and state:
            import shutil

            shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)
            shutil.rmtree(train_dir / "outputs", ignore_errors=True)
            state = {}
        tracking_uri = config.resolved_tracking_uri()
        _configure_http(config)
        trained = state.get("status") == "done"
        outputs = state.setdefault("outputs", {})
        done = outputs.get(okey, {})
        if (trained and done.get("status") == "done" and done.get("tracking_uri") == tracking_uri
                and _run_exists(tracking_uri, done.get("mlflow_run_id"))):
            log.info("run %s/%s already finished (MLflow run %s); reusing it. Use --force to train again.",
                     train_dir.name, okey, done["mlflow_run_id"])
            result = RunResult(**{**done["result"], "reused": True, "registered_version": None, "promotion": None})
            if register and chief:
                register_result(config, result)
            return result

        # Resume the MLflow run this output was being made in (killed), else the training's run if the
        # training is not finished, else start a new run over the trained weights.
        resume = done.get("mlflow_run_id") if done.get("tracking_uri") == tracking_uri else None
        if resume is None and not trained and state.get("tracking_uri", tracking_uri) == tracking_uri:
            resume = state.get("mlflow_run_id")
        if resume is not None and not _run_exists(tracking_uri, resume):
            resume = None
        tags = {"rnnflow.config": config.name, "rnnflow.run_key": train_dir.name, "rnnflow.output_key": okey}
        if trained and resume != state.get("mlflow_run_id"):
            tags["rnnflow.trained_by_run"] = state.get("mlflow_run_id") or "unknown"
        replay = trained and resume is None  # a new run over trained weights gets the training history
        tracker = Tracker(tracking_uri, config.tracking.experiment, run_name=config.name, tags=tags, enabled=chief,
                          run_id=resume)
        work = RunPaths(train_dir, okey, replay=replay and chief)
        with tracker:
            if chief:
                outputs[okey] = {"status": "running", "mlflow_run_id": tracker.run_id, "tracking_uri": tracking_uri}
                if not trained:
                    state.update(status="training", mlflow_run_id=tracker.run_id, tracking_uri=tracking_uri)
                write_state(state_path, state)
                tracker.log_config(config.model_dump(mode="json"))
                tracker.log_text(dump_config(config), "config.resolved.yaml")
            result = train(config, Path(data_dir), strategy=strategy, tracker=tracker, work=work,
                           register=register and chief)
        if chief:
            state["status"] = "done"
            stored = asdict(result)  # the registration in it is re-checked on reuse (register_result)
            for other in [k for k, v in outputs.items() if v.get("status") != "done"
                          and v.get("mlflow_run_id") == tracker.run_id]:
                del outputs[other]  # outputs begun in this run by a killed attempt with other settings
            outputs[okey] = {"status": "done", "mlflow_run_id": tracker.run_id, "tracking_uri": tracking_uri,
                             "result": stored}
            write_state(state_path, state)
        return result


def summary(result: RunResult) -> str:
    lines = [f"run {result.run_key}/{result.output_key}" + (" (already finished; reused)" if result.reused else "")]
    for k, v in result.metrics.items():
        lines.append(f"  {k}: {v:.4f}" if isinstance(v, float) and not math.isnan(v) else f"  {k}: {v}")
    lines.append(f"  model: {result.model_path}")
    if result.mlflow_run_id:
        lines.append(f"  MLflow run: {result.mlflow_run_id}")
    if result.registered_version:
        promo = result.promotion or {}
        name = promo.get("model_name", "")
        what = "registered earlier from this run:" if result.registered_before else "registered"
        lines.append(f"  {what} version {result.registered_version} of {name}: {promo.get('reason', '')}")
    lines.append(f"  sample: {result.sample}")
    return "\n".join(lines)
