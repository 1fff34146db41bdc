"""The training entry: carried state, replicas, clipping, schedules, checkpoints and resume."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.models.language_model import RNNLanguageModel
from keras_models.training import LanguageModelData, LanguageModelTask, Trainer
from pipelines.config import TrainingConfig
from preprocessing.input_fns import bptt_layout

VOCAB = 11


def _stream(n=1200, seed=0):
    # A learnable stream: mostly a repeating pattern with some noise.
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(4, VOCAB), n // (VOCAB - 4) + 1)[:n]
    noise = rng.integers(4, VOCAB, n)
    return np.where(rng.random(n) < 0.2, noise, base).astype(np.int32)


def _settings(**kw):
    base = dict(epochs=1, batch_size=4, bptt=5, checkpoint_every_steps=1000, log_every_steps=1,
                optimizer={"name": "sgd", "learning_rate": 0.5}, clip_norm=None, jit_compile=False)
    base.update(kw)
    return TrainingConfig(**base)


def _builder(cell="lstm", dropout=0.0, seed=3):
    def build():
        keras.utils.set_random_seed(seed)
        m = RNNLanguageModel(VOCAB, cell=cell, num_layers=1, embedding_dim=4, hidden_dim=4, dropout=dropout, seed=seed)
        m.build((None, None))
        return m

    return build


def _trainer(strategy=None, settings=None, layout=None, checkpoint_dir=None, cell="lstm", dropout=0.0,
             carry=True, evaluate=None, on_step=None, max_steps=None):
    settings = settings or _settings()
    layout = layout or bptt_layout(_stream(), settings.batch_size, settings.bptt)
    return Trainer(
        strategy=strategy or tf.distribute.get_strategy(), build_model=_builder(cell, dropout),
        task=LanguageModelTask(carry_state=carry), data=LanguageModelData(layout, max_steps=max_steps),
        settings=settings, evaluate=evaluate, monitor="perplexity", checkpoint_dir=checkpoint_dir,
        on_step=on_step, verbose=False,
    )


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_carried_state_two_windows_equal_the_joined_sequence():
    model = _builder("gru")()
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 10)).astype(np.int32)
    joined, joined_state = model.forward(ids)
    first, state = model.forward(ids[:, :6])
    second, final_state = model.forward(ids[:, 6:], state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), joined, atol=1e-5)
    np.testing.assert_allclose(final_state[0][0], joined_state[0][0], atol=1e-5)


def test_training_lowers_the_loss_and_reports_gradient_norms():
    steps = []
    trainer = _trainer(settings=_settings(epochs=3), on_step=lambda s, m: steps.append(m))
    result = trainer.fit()
    losses = result.history["train_loss"]
    assert losses[-1] < losses[0] - 0.2
    assert len(steps) == result.global_step == 3 * trainer.data.steps_per_epoch
    assert all(m["grad_norm"] > 0 and math.isfinite(m["grad_norm"]) for m in steps)


def test_clipping_bounds_the_update():
    settings = _settings(clip_norm=1e-3, optimizer={"name": "sgd", "learning_rate": 1.0})
    trainer = _trainer(settings=settings, max_steps=1)
    before = _weights(trainer.model)
    trainer.fit()
    delta = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(_weights(trainer.model), before)))
    assert delta == pytest.approx(1e-3, rel=1e-3)  # SGD step = lr * clipped gradient


def test_two_replicas_match_one_replica_for_the_same_global_batch():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest splits the CPU into two logical devices"
    settings = _settings(epochs=1, clip_norm=0.5)
    single = _trainer(settings=settings, max_steps=8)
    single_result = single.fit()
    mirrored = tf.distribute.MirroredStrategy([d.name for d in devices[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice())
    double = _trainer(strategy=mirrored, settings=settings, max_steps=8)
    double_result = double.fit()
    assert double.num_replicas == 2
    np.testing.assert_allclose(double_result.steps["train_loss"], single_result.steps["train_loss"], rtol=1e-5)
    for a, b in zip(_weights(double.model), _weights(single.model)):
        np.testing.assert_allclose(a, b, atol=1e-5)


class _Kill(Exception):
    pass


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, dropout):
    settings = _settings(epochs=2, checkpoint_every_steps=4, optimizer={"name": "adam", "learning_rate": 0.01})
    reference = _trainer(settings=settings, checkpoint_dir=str(tmp_path / "a"), dropout=dropout).fit()
    ref_model_weights = None

    def kill(step, metrics):
        if step == 11:  # mid-epoch 1 (steps_per_epoch is 59), after the checkpoint at step 8
            raise _Kill()

    first = _trainer(settings=settings, checkpoint_dir=str(tmp_path / "b"), dropout=dropout, on_step=kill)
    with pytest.raises(_Kill):
        first.fit()
    resumed = _trainer(settings=settings, checkpoint_dir=str(tmp_path / "b"), dropout=dropout)
    result = resumed.fit()
    assert result.resumed_from_step == 8
    assert result.global_step == reference.global_step
    np.testing.assert_allclose(result.history["train_loss"], reference.history["train_loss"], rtol=1e-5)
    again = _trainer(settings=settings, checkpoint_dir=str(tmp_path / "a"), dropout=dropout)
    again.restore()
    ref_model_weights = _weights(again.model)
    for a, b in zip(_weights(resumed.model), ref_model_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_epoch_decay_warmup_and_plateau_schedule():
    settings = _settings(epochs=3, schedule={"warmup_steps": 4, "decay": "epoch", "decay_start_epoch": 2, "decay_rate": 0.5})
    trainer = _trainer(settings=settings)
    assert trainer.learning_rate(0, 0) == pytest.approx(0.5 * 0.25)
    assert trainer.learning_rate(3, 0) == pytest.approx(0.5)
    assert trainer.learning_rate(100, 1) == pytest.approx(0.25)
    assert trainer.learning_rate(100, 2) == pytest.approx(0.125)

    values = iter([5.0, 6.0, 7.0, 8.0])
    plateau = _settings(epochs=4, schedule={"decay": "plateau", "decay_rate": 0.5, "plateau_patience": 0},
                        early_stopping={"patience": 2})
    trainer = _trainer(settings=plateau, evaluate=lambda m: {"perplexity": next(values)}, max_steps=2)
    result = trainer.fit()
    assert result.stopped_early and result.epochs_completed == 3
    assert result.history["learning_rate"] == pytest.approx([0.5, 0.5, 0.25])


def test_windowed_mode_resets_the_state():
    model = _builder()()
    task = LanguageModelTask(carry_state=False)
    batch = {"ids": np.ones((2, 3), np.int32), "targets": np.ones((2, 3), np.int32)}
    _, count, state = task.loss_and_state(model, batch, model.initial_state(2), training=False)
    assert float(count) == 6
    assert all(float(tf.reduce_max(tf.abs(s))) == 0.0 for layer in state for s in layer)


def test_mixed_precision_step_runs_and_keeps_float32_weights():
    settings = _settings(mixed_precision=True)
    trainer = _trainer(settings=settings, max_steps=2)
    result = trainer.fit()
    assert math.isfinite(result.steps["train_loss"][-1])
    assert trainer.model.embedding.embeddings.dtype == "float32"
    assert trainer.model.compute_dtype == "float16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
