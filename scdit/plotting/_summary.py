"""Metric bar charts from an evaluate DataFrame, and the training curve of a fitted model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..evaluate import LOWER_IS_BETTER
from ._utils import BASELINE_COLORS, PRED_COLOR, finish, method_colors, panel_axes

__all__ = ["LOWER_IS_BETTER", "metric_bars", "training_curve"]


def metric_bars(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    methods: Sequence[str] | None = None,
    errorbars: bool = True,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.0, 2.6),
    ax=None,
    save=None,
):
    """Bars of the mean of each metric per method (one panel per metric).

    Parameters
    ----------
    df
        Tidy output of :func:`scdit.evaluate` (columns ``method, condition, covariate, metric,
        value``).
    metrics
        Metrics to show, in order; default all metrics in ``df``.
    methods
        Methods to show, in order; default all, in order of appearance.
    errorbars
        Standard error of the mean over conditions (and covariates) as error bars.
    ncols, panel_size
        Grid columns and panel size (inches).
    ax
        Axes to draw into (one per metric); default a new figure.
    save
        Path to save the figure to.

    Returns
    -------
    The :class:`matplotlib.figure.Figure`. Means are NaN-ignoring; a method with no value for a
    metric (e.g. ``no_change`` for correlations) gets no bar and an ``n/a`` mark.
    """
    need = {"method", "metric", "value"}
    if not need <= set(df.columns):
        raise ValueError(f"df lacks column(s) {sorted(need - set(df.columns))}; pass the output "
                         "of scdit.evaluate.")
    all_metrics = list(dict.fromkeys(df["metric"]))
    metrics = all_metrics if metrics is None else [metrics] if isinstance(metrics, str) \
        else list(metrics)
    all_methods = list(dict.fromkeys(df["method"]))
    methods = all_methods if methods is None else [methods] if isinstance(methods, str) \
        else list(methods)
    for what, asked, have in (("metrics", metrics, all_metrics), ("methods", methods, all_methods)):
        missing = [m for m in asked if m not in have]
        if missing:
            raise ValueError(f"Unknown {what} {missing}; df has {have}.")
    g = df[df["metric"].isin(metrics) & df["method"].isin(methods)]
    g = g.groupby(["metric", "method"], sort=False)["value"]
    mean = g.mean().unstack("method").reindex(index=metrics, columns=methods)
    sem = g.sem().unstack("method").reindex(index=metrics, columns=methods)
    count = g.count().unstack("method").reindex(index=metrics, columns=methods).fillna(0)
    palette = method_colors(methods)
    fig, axes = panel_axes(len(metrics), ax, ncols=ncols, panel_size=panel_size, what="metrics")
    x = np.arange(len(methods))
    for metric, a in zip(metrics, axes, strict=True):
        h = mean.loc[metric].to_numpy(float)
        err = sem.loc[metric].to_numpy(float) if errorbars else None
        if err is not None:
            err = np.where(count.loc[metric].to_numpy() > 1, err, np.nan)
        a.bar(x, np.nan_to_num(h), yerr=None if err is None else np.nan_to_num(err),
              color=[palette[m] for m in methods], capsize=2, error_kw={"lw": 0.8})
        for xi, hi in zip(x, h, strict=True):
            if math.isnan(hi):
                a.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
        a.axhline(0, color="0.3", lw=0.6)
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        a.set_title(f"{metric} {arrow}", fontsize=9)
        a.set_xticks(x, methods, rotation=45, ha="right", fontsize=7)
        a.tick_params(axis="y", labelsize=7)
    return finish(fig, save)


def _history(model) -> list[Mapping]:
    if isinstance(model, Sequence) and not isinstance(model, str):
        return list(model)
    summary = model if isinstance(model, Mapping) else getattr(model, "summary", None)
    if not isinstance(summary, Mapping):
        raise TypeError("training_curve needs a fitted model (with .summary), its summary dict "
                        "or a history list of {'step', 'val_loss'}.")
    return list(summary.get("history") or [])


def training_curve(model, *, ax=None, save=None, figsize: tuple[float, float] = (4.5, 3.2)):
    """Validation loss against optimisation step, from ``model.summary["history"]``.

    Parameters
    ----------
    model
        A fitted :class:`~scdit.ScDiT` (or anything with a ``summary`` mapping), a summary dict,
        or the history list itself (``[{"step": ..., "val_loss": ...}, ...]``; other numeric keys
        are drawn as extra lines).
    ax
        Axes to draw into; default a new figure.
    save
        Path to save the figure to.

    Returns
    -------
    The :class:`matplotlib.figure.Figure`. Without validation history (tiny data sets are not
    validated) the panel says so instead of failing.
    """
    hist = pd.DataFrame(_history(model))
    if ax is None:
        fig, (a,) = panel_axes(1, None, ncols=1, panel_size=figsize, what="curves")
    else:
        fig, (a,) = panel_axes(1, ax, what="curves")
    if hist.empty or "step" not in hist:
        a.text(0.5, 0.5, "no validation history", ha="center", va="center",
               transform=a.transAxes, color="0.4")
    else:
        hist = hist.sort_values("step")
        cols = [c for c in hist.columns if c != "step" and pd.api.types.is_numeric_dtype(hist[c])]
        for i, c in enumerate(cols):
            a.plot(hist["step"], hist[c], marker="o", ms=3, lw=1.2, label=c,
                   color=PRED_COLOR if i == 0 else BASELINE_COLORS[(i - 1) % len(BASELINE_COLORS)])
        if "val_loss" in hist and hist["val_loss"].notna().any():
            best = hist.loc[hist["val_loss"].idxmin()]
            a.scatter([best["step"]], [best["val_loss"]], s=60, facecolors="none",
                      edgecolors="#d62728", zorder=3, label=f"best {best['val_loss']:.4f}")
        a.legend(fontsize=7, frameon=False)
    a.set_xlabel("step", fontsize=8)
    a.set_ylabel("loss", fontsize=8)
    a.set_title("training curve (validation, EMA weights)", fontsize=9)
    a.tick_params(labelsize=7)
    return finish(fig, save)
