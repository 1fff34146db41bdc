"""Training plots: learning curves, gradient flow through time, per-step gradient norms.

Every function returns a ``matplotlib.figure.Figure`` drawn on an Agg canvas; nothing is shown and
pyplot's global figure list is not used, so figures are freed with their last reference and plotting
works on machines without a display. Log them with ``Tracker.log_figure(fig, "plots/<name>.png")``
or save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LR_KEYS = ("learning_rate", "lr")
_PANEL_SIZE = (5.0, 3.6)


def _figure(ncols: int = 1, nrows: int = 1) -> Figure:
    fig = Figure(figsize=(_PANEL_SIZE[0] * ncols, _PANEL_SIZE[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _values(series: Any) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in series], dtype=float)


def _log_if_positive(ax: Any, *arrays: np.ndarray) -> None:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.array([])
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")


def _step_series(series: Any) -> tuple[np.ndarray, np.ndarray]:
    """``values`` or ``(steps, values)`` or ``{"step": [...], "value": [...]}`` → (steps, values)."""
    if isinstance(series, Mapping):
        return np.asarray(series["step"], dtype=float), _values(series["value"])
    if isinstance(series, tuple) and len(series) == 2:
        steps, values = series
        return np.asarray(steps, dtype=float), _values(values)
    values = _values(series)
    return np.arange(1, len(values) + 1, dtype=float), values


def learning_curves(
    history: Mapping[str, Sequence[float]],
    step_history: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Figure:
    """Train vs validation curves per epoch, the learning rate, and optional per-step series.

    Args:
        history: per-epoch values keyed by metric, Keras style: ``loss``, ``val_loss``,
            ``perplexity``, ``val_perplexity``, ... A ``val_<m>`` series is drawn on the panel of
            ``<m>``; ``learning_rate`` (or ``lr``) gets a panel of its own. Epochs are numbered
            from 1. Perplexity panels use a log scale.
        step_history: optional per-step series keyed by name, each a list of values (steps
            1, 2, ...) or a ``(steps, values)`` pair; drawn together on a last panel.
        title: the figure's title.

    Returns:
        A figure with one axes per panel, titled by the metric name; lines are labelled ``train``
        and ``validation`` (the metric's own name for metrics with only one of the two).
    """
    metrics: list[str] = []
    for key in history:
        if key in LR_KEYS:
            continue
        base = key[len("val_") :] if key.startswith("val_") else key
        if base not in metrics:
            metrics.append(base)
    lr_key = next((k for k in LR_KEYS if k in history), None)
    panels = len(metrics) + (lr_key is not None) + bool(step_history)
    fig = _figure(ncols=max(panels, 1))
    axes = [fig.add_subplot(1, max(panels, 1), i + 1) for i in range(max(panels, 1))]
    i = 0
    for metric in metrics:
        ax = axes[i]
        i += 1
        drawn = []
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if key not in history:
                continue
            values = _values(history[key])
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
            drawn.append(values)
        if "perplexity" in metric or metric in ("ppl",):
            _log_if_positive(ax, *drawn)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if lr_key is not None:
        ax = axes[i]
        i += 1
        values = _values(history[lr_key])
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, color="tab:green", label="learning rate")
        ax.set_title("learning rate")
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if step_history:
        ax = axes[i]
        i += 1
        for name, series in step_history.items():
            steps, values = _step_series(series)
            ax.plot(steps, values, linewidth=0.8, label=name)
        ax.set_title("per step")
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend()
    if panels == 0:
        axes[0].text(0.5, 0.5, "no history", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def gradient_flow(
    norms: Mapping[str, Any],
    order: str = "time",
    title: str = "gradient flow through time",
) -> Figure:
    """The vanishing-gradient picture: ``||dL_T/dh_t||`` against the number of steps back from T.

    Args:
        norms: per cell type (``"rnn"``, ``"lstm"``, ``"gru"``, ...) an array of gradient norms. 1-D:
            one value per time step; 2-D ``[samples, time]``: the mean is drawn with a min-max band.
        order: ``"time"`` when index ``t`` is the time step (the last one is ``T``, 0 steps back);
            ``"steps_back"`` when index ``k`` already counts steps back from ``T``.
        title: the axes title.

    Returns:
        A figure with one log-scale axes and one line per cell type, labelled with its name.
        Non-positive norms (underflow to 0) are left out of the line rather than breaking the log scale.
    """
    if order not in ("time", "steps_back"):
        raise ValueError(f"order must be 'time' or 'steps_back', got {order!r}")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, values in norms.items():
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 1:
            arr = arr[None, :]
        elif arr.ndim != 2:
            raise ValueError(f"gradient_flow: norms[{name!r}] must be 1-D or 2-D, got shape {arr.shape}")
        if order == "time":
            arr = arr[:, ::-1]  # index k = steps back from T
        arr = np.where(arr > 0, arr, np.nan)
        back = np.arange(arr.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(arr, axis=0) if arr.shape[0] > 1 else arr[0]
        (line,) = ax.plot(back, mean, marker="o", markersize=3, label=str(name))
        if arr.shape[0] > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ax.fill_between(back, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("steps back from T  (T − t)")
    ax.set_ylabel("‖∂L_T / ∂h_t‖")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def gradient_norms(
    steps: Sequence[int] | np.ndarray,
    norms: Sequence[float] | np.ndarray,
    clip_norm: float | None = None,
    log_scale: bool = False,
    title: str = "global gradient norm",
) -> Figure:
    """The global gradient norm at each training step, with the clipping threshold if given.

    Returns:
        A figure with one axes: a line labelled ``gradient norm`` and, with ``clip_norm``, a dashed
        horizontal line labelled ``clip norm``.
    """
    steps = np.asarray(steps, dtype=float)
    values = _values(norms)
    if steps.shape != values.shape:
        raise ValueError(f"gradient_norms: {steps.shape[0]} steps but {values.shape[0]} norms")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, values, linewidth=0.8, label="gradient norm")
    if clip_norm is not None:
        ax.axhline(clip_norm, linestyle="--", color="tab:red", label="clip norm")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("‖g‖₂")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def confusion_matrix(matrix: Any, labels: Sequence[str], title: str = "confusion matrix",
                     normalize: bool = True) -> Figure:
    """A heatmap of ``matrix[gold, predicted]`` (rows: gold labels, columns: predictions).

    With ``normalize`` each row is divided by its total (recall per class on the diagonal) and the
    raw counts are written in the cells when there is room.
    """
    counts = np.asarray(matrix, dtype=float)
    n = len(labels)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {n} labels")
    totals = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) if normalize else counts
    size = max(4.0, 0.45 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the gold label" if normalize else "count")
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
    return fig


def attention_maps(maps: Sequence[tuple[Any, Sequence[str], Sequence[str]]], title: str = "attention") -> Figure:
    """Heatmaps of attention weights, one panel per example.

    ``maps``: ``(weights [output_len, source_len], source_tokens, output_tokens)`` triples; the
    source runs along the x axis, the output along the y axis (row ``t`` is the distribution the
    decoder used to produce output token ``t``).
    """
    n = max(len(maps), 1)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig = _figure(ncols=cols, nrows=rows)
    for k, (weights, source, output) in enumerate(maps):
        ax = fig.add_subplot(rows, cols, k + 1)
        w = np.asarray(weights, dtype=float)[: len(output), : len(source)]
        ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(source)), list(source), fontsize=7)
        ax.set_yticks(range(len(output)), list(output), fontsize=7)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
    fig.suptitle(title)
    return fig
