"""pipelines.plots: figures with the expected panels, lines and labels, saved as PNG."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from pipelines import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def _save_png(fig, path):
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 1000


def test_learning_curves_panels_lines_and_png(tmp_path):
    history = {
        "loss": [5.0, 4.5, 4.2],
        "val_loss": [5.1, 4.7, 4.6],
        "perplexity": [148.4, 90.0, 66.7],
        "val_perplexity": [164.0, 110.0, 99.5],
        "learning_rate": [1.0, 1.0, 0.5],
    }
    steps = {"loss": ([10, 20, 30, 40], [5.5, 5.0, 4.8, 4.4])}
    fig = plots.learning_curves(history, step_history=steps, title="ptb")

    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["loss", "perplexity", "learning rate", "per step"]
    assert _labels(axes[0]) == ["train", "validation"]
    assert _labels(axes[1]) == ["train", "validation"]
    assert axes[1].get_yscale() == "log"
    assert axes[0].get_yscale() == "linear"
    assert _labels(axes[2]) == ["learning rate"]
    assert _labels(axes[3]) == ["loss"]
    # epochs are 1-based; validation values as given
    x, y = axes[0].get_lines()[1].get_data()
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_allclose(y, history["val_loss"])
    np.testing.assert_array_equal(axes[3].get_lines()[0].get_xdata(), [10, 20, 30, 40])
    assert all(ax.get_xlabel() == "epoch" for ax in axes[:3])
    assert fig._suptitle.get_text() == "ptb"
    _save_png(fig, tmp_path / "learning_curves.png")


def test_learning_curves_train_only_and_empty(tmp_path):
    fig = plots.learning_curves({"loss": [2.0, 1.0]})
    (ax,) = fig.get_axes()
    assert _labels(ax) == ["train"]

    fig = plots.learning_curves({"val_bpc": [1.9, 1.7], "lr": [0.1, 0.1]}, step_history={"loss": [3.0, 2.0, 1.5]})
    assert [ax.get_title() for ax in fig.get_axes()] == ["bpc", "learning rate", "per step"]
    assert _labels(fig.get_axes()[0]) == ["validation"]
    np.testing.assert_array_equal(fig.get_axes()[2].get_lines()[0].get_xdata(), [1, 2, 3])

    _save_png(plots.learning_curves({}), tmp_path / "empty.png")


def test_gradient_flow_log_scale_steps_back(tmp_path):
    T = 8
    t = np.arange(T)
    rnn = 0.5 ** (T - 1 - t)  # time order: vanishes going back from T
    lstm = 0.95 ** (T - 1 - t)
    fig = plots.gradient_flow({"rnn": rnn, "lstm": lstm})

    (ax,) = fig.get_axes()
    assert ax.get_yscale() == "log"
    assert _labels(ax) == ["rnn", "lstm"]
    assert "steps back" in ax.get_xlabel()
    x, y = ax.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, np.arange(T))
    np.testing.assert_allclose(y, 0.5 ** np.arange(T))  # 0 steps back = the value at T
    _save_png(fig, tmp_path / "gradient_flow.png")


def test_gradient_flow_steps_back_order_2d_band_and_zeros():
    samples = np.array([[1.0, 0.1, 0.0], [3.0, 0.3, 0.0]])  # already steps back; underflow to 0
    fig = plots.gradient_flow({"gru": samples}, order="steps_back")
    (ax,) = fig.get_axes()
    y = ax.get_lines()[0].get_ydata()
    np.testing.assert_allclose(y[:2], [2.0, 0.2])
    assert np.isnan(y[2])  # zero left out, not plotted on the log scale
    assert len(ax.collections) == 1  # the min-max band
    with pytest.raises(ValueError, match="order"):
        plots.gradient_flow({"gru": samples}, order="backwards")
    with pytest.raises(ValueError, match="1-D or 2-D"):
        plots.gradient_flow({"gru": np.ones((2, 2, 2))})


def test_gradient_norms(tmp_path):
    steps = np.arange(1, 51)
    norms = np.linspace(8.0, 1.0, 50)
    fig = plots.gradient_norms(steps, norms, clip_norm=5.0)
    (ax,) = fig.get_axes()
    assert _labels(ax) == ["gradient norm", "clip norm"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), norms)
    assert ax.get_lines()[1].get_ydata()[0] == 5.0
    assert ax.get_xlabel() == "step"
    _save_png(fig, tmp_path / "gradient_norms.png")

    assert plots.gradient_norms(steps, norms, log_scale=True).get_axes()[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="steps"):
        plots.gradient_norms([1, 2, 3], [1.0, 2.0])


def test_figures_do_not_use_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.learning_curves({"loss": [1.0]})
    plots.gradient_flow({"rnn": [1.0, 0.5]})
    plots.gradient_norms([1], [1.0])
    assert plt.get_fignums() == before
