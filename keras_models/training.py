"""The one training entry for every rnnflow model.

:class:`Trainer` runs a custom loop under any ``tf.distribute`` strategy: the strategy's replicas
each run the task's forward pass on their share of the global batch, gradients are summed across
replicas, normalised by the global number of targets, clipped by global norm (after the all-reduce,
so one replica and several give the same update), and applied. It handles SGD / Adam, LR warmup,
per-epoch decay and reduce-on-plateau, early stopping, mixed precision, checkpoints every N steps
and resume, and reports the global gradient norm per step.

What differs between models lives in a *task* (:class:`LanguageModelTask`, :class:`TaggingTask`,
:class:`ClassificationTask`, :class:`Seq2SeqTask`): which part of a batch is the target and, for
truncated BPTT, the recurrent state carried to the next batch. The summed loss and the target count
come from the model itself: every rnnflow model has the same ``loss_sum(inputs, targets,
training=None) -> (loss_sum, count)``. The carried state is a per-replica value that the loop
passes from one step to the next (Keras' ``stateful=True`` does not work under ``tf.distribute``);
it is gathered into the checkpoint so that a resumed run continues exactly where the killed one
stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import keras
import numpy as np
import tensorflow as tf

from keras_models.inputs import model_inputs
from keras_models.strategies import is_chief, task_info
from preprocessing.input_fns import bptt_dataset_fn

log = logging.getLogger(__name__)


class TrainingSettings(Protocol):
    """What the trainer reads from its settings (``pipelines.config.TrainingConfig`` satisfies it)."""

    epochs: int
    max_steps_per_epoch: int | None
    clip_norm: float | None
    mixed_precision: bool
    jit_compile: bool
    checkpoint_every_steps: int
    log_every_steps: int
    seed: int
    optimizer: Any  # .name, .learning_rate, .momentum, .weight_decay
    schedule: Any  # .warmup_steps, .decay, .decay_rate, .decay_start_epoch, .plateau_patience, .min_learning_rate
    early_stopping: Any  # .patience, .min_delta
    # optional: restore_best_weights (end with the best validation epoch's weights even without early stopping)


class TrainData(Protocol):
    """A training split as the trainer consumes it."""

    steps_per_epoch: int
    global_batch_size: int

    def dataset_fn(self, epoch: int, skip_steps: int) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]: ...


class Task(Protocol):
    """The model-specific part of a training step."""

    def initial_state(self, model: keras.Model, batch_size: int) -> Any: ...

    def loss_and_state(self, model: keras.Model, batch: dict, state: Any, training: bool) -> tuple: ...


# --------------------------------------------------------------------------------------- LM task
@dataclass
class LanguageModelTask:
    """Token cross-entropy over BPTT windows; the final state seeds the next window when ``carry_state``."""

    carry_state: bool = True

    def initial_state(self, model, batch_size):
        return model.initial_state(batch_size)

    def loss_and_state(self, model, batch, state, training):
        loss_sum, count, new_state = model.loss_sum(
            batch["ids"], batch["targets"], training=training, states=state, return_state=True
        )
        if self.carry_state:
            new_state = tf.nest.map_structure(tf.stop_gradient, new_state)
        else:
            new_state = tf.nest.map_structure(tf.zeros_like, new_state)
        return loss_sum, count, new_state


@dataclass
class LanguageModelData:
    """A BPTT layout (see ``preprocessing.input_fns``) as training data."""

    layout: Any  # preprocessing.input_fns.BPTTLayout (in memory) | preprocessing.streams.TokenStream
    shuffle_windows: bool = False
    seed: int = 0
    max_steps: int | None = None
    shuffle_buffer: int = 10_000

    @property
    def steps_per_epoch(self) -> int:
        n = self.layout.num_windows
        return min(n, self.max_steps) if self.max_steps else n

    @property
    def global_batch_size(self) -> int:
        return self.layout.num_streams

    def dataset_fn(self, epoch, skip_steps):
        return bptt_dataset_fn(
            self.layout, shuffle_windows=self.shuffle_windows, seed=self.seed + epoch, skip_windows=skip_steps,
            shuffle_buffer=self.shuffle_buffer,
        )


# ------------------------------------------------------------------- tagging, classification, seq2seq
class _StatelessTask:
    """A task whose batches are independent: no recurrent state is carried between them.

    The loss is the model's ``loss_sum(model_inputs(batch), batch[target], training)``.
    """

    target: ClassVar[str]
    reports_perplexity = False

    def initial_state(self, model, batch_size):
        return ()

    def loss_and_state(self, model, batch, state, training):
        loss_sum, count = model.loss_sum(model_inputs(batch), batch[self.target], training=training)
        return loss_sum, count, ()


@dataclass
class TaggingTask(_StatelessTask):
    """Per-token cross-entropy (or the CRF's negative log-likelihood) over real tokens; no carried state."""

    target: ClassVar[str] = "tags"


@dataclass
class ClassificationTask(_StatelessTask):
    """Cross-entropy of one label per sequence; no carried state."""

    target: ClassVar[str] = "label"


@dataclass
class Seq2SeqTask(_StatelessTask):
    """Teacher-forced target cross-entropy over the real target tokens (``<eos>`` included); no carried state."""

    target: ClassVar[str] = "target_out"
    reports_perplexity = True


@dataclass
class ExampleData:
    """Tagging / classification / seq2seq examples as training data: shuffled, length-grouped global batches
    (a new order every epoch from ``seed + epoch``); the last partial batch of an epoch is dropped.

    ``examples``: in memory (:class:`~preprocessing.input_fns.Examples`: a full permutation) or read
    from the shards (:class:`~preprocessing.streams.ExampleStream`: a bounded shuffle of
    ``shuffle_buffer`` examples); both give ``len(examples) // batch_size`` batches an epoch."""

    examples: Any  # Examples | ExampleStream
    batch_size: int
    seed: int = 0
    max_steps: int | None = None
    max_length: int | None = None
    max_chars: int | None = None
    shuffle_buffer: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.examples) // self.batch_size
        if n == 0:
            raise ValueError(f"{len(self.examples)} training examples make no batch of {self.batch_size}; "
                             "lower training.batch_size")
        return min(n, self.max_steps) if self.max_steps else n

    @property
    def global_batch_size(self) -> int:
        return self.batch_size

    def dataset_fn(self, epoch, skip_steps):
        extra = {} if self.shuffle_buffer is None else {"shuffle_buffer": self.shuffle_buffer}
        return self.examples.dataset_fn(self.batch_size, seed=self.seed + epoch, skip_batches=skip_steps,
                                        max_length=self.max_length, max_chars=self.max_chars, **extra)


# ------------------------------------------------------------------------------------ the trainer
# ``training.optimizer.name`` → the Keras optimizer from the optimizer settings (the config's choice list)
OPTIMIZERS: dict[str, Callable[[Any], keras.optimizers.Optimizer]] = {
    "sgd": lambda opt: keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum,
                                            weight_decay=opt.weight_decay),
    "adam": lambda opt: keras.optimizers.Adam(learning_rate=opt.learning_rate, weight_decay=opt.weight_decay),
}
# ``training.schedule.decay``: none, per epoch after ``decay_start_epoch``, or on a validation plateau
SCHEDULE_DECAYS = ("none", "epoch", "plateau")


def make_optimizer(settings: TrainingSettings) -> keras.optimizers.Optimizer:
    opt = settings.optimizer
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[opt.name](opt)
    if settings.mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@dataclass
class TrainResult:
    history: dict[str, list[float]]
    steps: dict[str, list[float]]
    epochs_completed: int
    global_step: int
    best_value: float | None
    stopped_early: bool
    resumed_from_step: int | None = None


def _variable_dict(variables) -> dict[str, tf.Variable]:
    """``{index: tf.Variable}`` for a list of Keras variables (their TF variables).

    Keys are positions, not names or paths: those carry auto-numbered names (``adam_1/...``,
    ``rnn_language_model_1_..._momentum``) that differ between the run that saved and the one that
    resumes. Positions are fixed by the model's structure; a mismatch fails on shape at restore.
    """
    return {f"{i:04d}": getattr(v, "value", v) for i, v in enumerate(variables)}


@dataclass
class _Counters:
    """Trainer bookkeeping that lives in the checkpoint."""

    step: tf.Variable = field(default_factory=lambda: tf.Variable(0, dtype=tf.int64, trainable=False, name="step"))
    epoch: tf.Variable = field(default_factory=lambda: tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"))
    step_in_epoch: tf.Variable = field(default_factory=lambda: tf.Variable(0, dtype=tf.int64, trainable=False))
    lr_factor: tf.Variable = field(default_factory=lambda: tf.Variable(1.0, dtype=tf.float64, trainable=False))
    history: tf.Variable = field(default_factory=lambda: tf.Variable("{}", dtype=tf.string, trainable=False))


class Trainer:
    """Trains ``model`` on ``data`` for ``task`` under ``strategy``.

    Args:
        strategy: a ``tf.distribute.Strategy`` (``keras_models.strategies.make_strategy``).
        build_model: called under ``strategy.scope()``; returns a built Keras model.
        task: the model-specific loss / state logic (e.g. :class:`LanguageModelTask`).
        data: training data (e.g. :class:`LanguageModelData`).
        settings: training settings (``pipelines.config.TrainingConfig``).
        evaluate: ``evaluate(model) -> dict`` on the validation split, called after every epoch.
        monitor: the key of ``evaluate``'s result that early stopping, plateau decay and the best
            weights watch.
        greater_is_better: whether a higher ``monitor`` is better (accuracy, F1) or a lower (loss).
        checkpoint_dir: where checkpoints go; a run finding checkpoints there resumes from the newest.
        on_step: ``on_step(step, metrics)`` every ``log_every_steps`` (e.g. MLflow logging).
        on_epoch: ``on_epoch(epoch, metrics)`` after every epoch.
        verbose: show a progress bar.
    """

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        build_model: Callable[[], keras.Model],
        task: Task,
        data: TrainData,
        settings: TrainingSettings,
        evaluate: Callable[[keras.Model], dict[str, float]] | None = None,
        monitor: str = "loss",
        greater_is_better: bool = False,
        checkpoint_dir: str | None = None,
        on_step: Callable[[int, dict], None] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
        verbose: bool = True,
    ):
        self.strategy = strategy
        self.task = task
        self.data = data
        self.settings = settings
        self.evaluate = evaluate
        self.monitor = monitor
        self.greater_is_better = greater_is_better
        self.perplexity = getattr(task, "reports_perplexity", True)
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.verbose = verbose
        self.is_chief = is_chief(strategy)
        self.num_replicas = strategy.num_replicas_in_sync
        if data.global_batch_size % self.num_replicas:
            raise ValueError(
                f"the global batch size {data.global_batch_size} must be divisible by the "
                f"{self.num_replicas} replicas in sync"
            )
        self.per_replica_batch = data.global_batch_size // self.num_replicas
        previous_policy = keras.config.dtype_policy()
        if settings.mixed_precision:  # only for the layers built here; restored below
            keras.config.set_dtype_policy("mixed_float16")
        try:
            with strategy.scope():
                self.model = build_model()
                self.optimizer = make_optimizer(settings)
                self.optimizer.build(self.model.trainable_variables)
        finally:
            keras.config.set_dtype_policy(previous_policy)
        self.counters = _Counters()
        # The carried state, gathered over replicas, in plain (non-distributed) variables for the checkpoint.
        template = task.initial_state(self.model, data.global_batch_size)
        self._state_vars = tf.nest.map_structure(
            lambda t: tf.Variable(tf.zeros(t.shape, t.dtype), trainable=False), template
        )
        self.checkpoint_dir = checkpoint_dir
        self._manager = None
        if checkpoint_dir:
            # Keras 3 objects are not fully visible to tf.train.Checkpoint's object graph (layers
            # held in lists, seed generators), so the checkpoint names every variable explicitly:
            # weights, dropout RNG states and optimizer slots.
            ckpt = tf.train.Checkpoint(
                model=_variable_dict(self.model.variables), optimizer=_variable_dict(self.optimizer.variables),
                counters=self.counters.__dict__, carried_state=tf.nest.flatten(self._state_vars),
            )
            self._manager = tf.train.CheckpointManager(ckpt, self._writable_dir(checkpoint_dir), max_to_keep=3)
        # One trace per batch shape, never a shape-relaxed one: XLA compiles per shape anyway, and the
        # while loops' TensorArrays need static element shapes to be differentiated under XLA. Batch
        # shapes come from a small set (BPTT windows; bucketed lengths, preprocessing.input_fns).
        self._grad_fn = tf.function(self._gradients, jit_compile=settings.jit_compile)
        self._train_step = tf.function(self._distributed_step)

    # ------------------------------------------------------------------ checkpoints
    def _writable_dir(self, checkpoint_dir: str) -> str:
        """The chief writes the real checkpoints; other workers write to a scratch directory (TF's pattern)."""
        if self.is_chief:
            tf.io.gfile.makedirs(checkpoint_dir)
            return checkpoint_dir
        task_type, task_id = task_info(self.strategy)
        self._scratch = tempfile.mkdtemp(prefix=f"rnnflow-{task_type}-{task_id}-")
        return self._scratch

    def restore(self) -> int | None:
        """Restores the newest checkpoint if there is one; returns its global step."""
        if not self._manager:
            return None
        # Every worker restores from the chief's directory.
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if not latest:
            return None
        self._manager.checkpoint.restore(latest).expect_partial()
        return int(self.counters.step.numpy())

    def _save(self, state) -> None:
        if not self._manager:
            return
        if not tf.nest.flatten(state):
            self._manager.save(checkpoint_number=int(self.counters.step.numpy()))
            return
        gathered = tf.nest.map_structure(lambda v: self.strategy.gather(v, axis=0), state)
        tf.nest.map_structure(lambda var, value: var.assign(value), self._state_vars, gathered)
        self._manager.save(checkpoint_number=int(self.counters.step.numpy()))

    def _distribute_state(self, full_state):
        if not tf.nest.flatten(full_state):
            return full_state  # a task without carried state
        b = self.per_replica_batch

        def value_fn(ctx):
            start = ctx.replica_id_in_sync_group * b
            return tf.nest.map_structure(lambda t: tf.identity(t[start : start + b]), full_state)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _fresh_state(self):
        return self._distribute_state(self.task.initial_state(self.model, self.data.global_batch_size))

    # ------------------------------------------------------------------ one step
    def _gradients(self, batch, state):
        with tf.GradientTape() as tape:
            loss_sum, count, new_state = self.task.loss_and_state(self.model, batch, state, training=True)
            scaled = self.optimizer.scale_loss(loss_sum)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        grads = [tf.convert_to_tensor(g) for g in grads]
        return loss_sum, count, grads, new_state

    def _replica_step(self, batch, state):
        loss_sum, count, grads, new_state = self._grad_fn(batch, state)
        ctx = tf.distribute.get_replica_context()
        if self.num_replicas > 1:
            loss_sum, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [loss_sum, count])
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        grads = [tf.cast(g, tf.float32) / (count * scale) for g in grads]  # gradient of the mean loss
        norm = tf.linalg.global_norm(grads)
        if self.settings.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.settings.clip_norm, use_norm=norm)
        # The optimizer sums gradients over replicas once more and a loss-scale optimizer unscales.
        grads = [g * scale / self.num_replicas for g in grads]
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss_sum, count, norm, new_state

    def _distributed_step(self, batch, state):
        loss_sum, count, norm, new_state = self.strategy.run(self._replica_step, args=(batch, state))
        first = self.strategy.experimental_local_results
        return first(loss_sum)[0], first(count)[0], first(norm)[0], new_state

    # ------------------------------------------------------------------ schedule
    def _epoch_lr_factor(self, epoch: int) -> float:
        """The per-epoch decay factor (``epoch`` is 0-based); plateau decay is applied on top."""
        sched = self.settings.schedule
        if sched.decay == "epoch":
            return sched.decay_rate ** max(0, epoch + 1 - sched.decay_start_epoch + 1)
        return 1.0

    def learning_rate(self, step: int, epoch: int) -> float:
        sched = self.settings.schedule
        lr = self.settings.optimizer.learning_rate * self._epoch_lr_factor(epoch) * float(self.counters.lr_factor.numpy())
        if sched.warmup_steps:
            lr *= min(1.0, (step + 1) / sched.warmup_steps)
        return max(lr, sched.min_learning_rate)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        s = self.settings
        resumed = self.restore()
        history: dict[str, Any] = json.loads(self.counters.history.numpy().decode() or "{}")
        epochs_hist = history.setdefault("epochs", {})
        steps_hist = history.setdefault("steps", {})
        best = history.get("best")
        since_best = history.get("since_best", 0)
        plateau_wait = history.get("plateau_wait", 0)
        stopped_early = bool(history.get("stopped_early", False))
        steps_per_epoch = self.data.steps_per_epoch
        if resumed is not None and self.verbose and self.is_chief:
            log.info(
                "resuming from checkpoint at step %d (epoch %d, step %d of %d)", resumed,
                int(self.counters.epoch.numpy()) + 1, int(self.counters.step_in_epoch.numpy()), steps_per_epoch,
            )
        state = self._distribute_state(tf.nest.map_structure(tf.convert_to_tensor, self._state_vars)) if resumed is not None else None

        while int(self.counters.epoch.numpy()) < s.epochs and not stopped_early:
            epoch = int(self.counters.epoch.numpy())
            skip = int(self.counters.step_in_epoch.numpy())
            if state is None or skip == 0:
                state = self._fresh_state()
            dataset = self.strategy.distribute_datasets_from_function(self.data.dataset_fn(epoch, skip))
            progbar = keras.utils.Progbar(steps_per_epoch, verbose=1 if (self.verbose and self.is_chief) else 0,
                                          stateful_metrics=["loss", "ppl", "lr", "grad_norm"])
            if skip == 0:
                history["epoch_sums"] = [0.0, 0.0]  # summed loss and target count of the epoch so far
            pending: list[tuple] = []
            iterator = iter(dataset)
            for i in range(skip, steps_per_epoch):
                batch = next(iterator)
                step = int(self.counters.step.numpy())
                lr = self.learning_rate(step, epoch)
                self.optimizer.learning_rate.assign(lr)
                loss_sum, count, norm, state = self._train_step(batch, state)
                pending.append((loss_sum, count, norm))
                self.counters.step.assign_add(1)
                self.counters.step_in_epoch.assign(i + 1)
                step += 1
                last = i + 1 == steps_per_epoch
                checkpoint = step % s.checkpoint_every_steps == 0 and not last
                if step % s.log_every_steps == 0 or last or checkpoint:
                    metrics = self._flush(pending, history, lr, self.perplexity)
                    pending = []
                    for k, v in metrics.items():
                        steps_hist.setdefault(k, []).append(v)
                    steps_hist.setdefault("step", []).append(step)
                    if self.on_step and self.is_chief:
                        self.on_step(step, metrics)
                    shown = [("loss", metrics["train_loss"])]
                    if self.perplexity:
                        shown.append(("ppl", metrics["train_perplexity"]))
                    progbar.update(i + 1, shown + [("lr", lr), ("grad_norm", metrics["grad_norm"])])
                if checkpoint:
                    self._save_history(history, epochs_hist, best, since_best, plateau_wait, stopped_early)
                    self._save(state)
            epoch_loss, epoch_count = history["epoch_sums"]

            # end of epoch: evaluate, decay, early stopping, checkpoint
            metrics = {"epoch": epoch + 1, "learning_rate": self.learning_rate(int(self.counters.step.numpy()) - 1, epoch)}
            if epoch_count:
                metrics["train_loss"] = epoch_loss / epoch_count
                if self.perplexity:
                    metrics["train_perplexity"] = math.exp(min(metrics["train_loss"], 700.0))
            if self.evaluate:
                for k, v in self.evaluate(self.model).items():
                    metrics[f"val_{k}"] = v
                value = metrics.get(f"val_{self.monitor}")
                if value is not None:
                    delta = s.early_stopping.min_delta
                    improved = value > best + delta if self.greater_is_better and best is not None else (
                        best is None or value < best - delta)
                    if improved:
                        best, since_best, plateau_wait = value, 0, 0
                        if self.checkpoint_dir and self.is_chief:
                            self.model.save_weights(os.path.join(self.checkpoint_dir, "best.weights.h5"))
                    else:
                        since_best += 1
                        plateau_wait += 1
                        if s.schedule.decay == "plateau" and plateau_wait > s.schedule.plateau_patience:
                            self.counters.lr_factor.assign(self.counters.lr_factor * s.schedule.decay_rate)
                            plateau_wait = 0
                        if s.early_stopping.patience and since_best >= s.early_stopping.patience:
                            stopped_early = True
            for k, v in metrics.items():
                epochs_hist.setdefault(k, []).append(v)
            if self.on_epoch and self.is_chief:
                self.on_epoch(epoch + 1, metrics)
            if self.verbose and self.is_chief:
                log.info(" - ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()))
            self.counters.epoch.assign_add(1)
            self.counters.step_in_epoch.assign(0)
            state = None
            self._save_history(history, epochs_hist, best, since_best, plateau_wait, stopped_early)
            self._save(self._fresh_state())

        restore = stopped_early or getattr(s, "restore_best_weights", False)
        if restore and self.checkpoint_dir:
            best_path = os.path.join(self.checkpoint_dir, "best.weights.h5")
            if tf.io.gfile.exists(best_path):
                self.model.load_weights(best_path)
        self._cleanup()
        return TrainResult(
            history=epochs_hist, steps=steps_hist, epochs_completed=int(self.counters.epoch.numpy()),
            global_step=int(self.counters.step.numpy()), best_value=best, stopped_early=stopped_early,
            resumed_from_step=resumed,
        )

    @staticmethod
    def _flush(pending, history, lr, perplexity=True) -> dict[str, float]:
        """Per-step metrics over the steps since the last flush; adds them to the epoch's sums."""
        loss = float(tf.add_n([p[0] for p in pending]))
        count = float(tf.add_n([p[1] for p in pending]))
        norms = [float(p[2]) for p in pending]
        history["epoch_sums"] = [history["epoch_sums"][0] + loss, history["epoch_sums"][1] + count]
        mean = loss / count
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"training loss became {mean}; lower the learning rate or set training.clip_norm"
            )
        out = {"train_loss": mean}
        if perplexity:
            out["train_perplexity"] = math.exp(min(mean, 700.0))
        out.update(grad_norm=float(np.mean(norms)), grad_norm_max=float(np.max(norms)), learning_rate=lr)
        return out

    def _save_history(self, history, epochs_hist, best, since_best, plateau_wait, stopped_early):
        history.update(epochs=epochs_hist, best=best, since_best=since_best, plateau_wait=plateau_wait,
                       stopped_early=stopped_early)
        self.counters.history.assign(json.dumps(history))

    def _cleanup(self):
        scratch = getattr(self, "_scratch", None)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
