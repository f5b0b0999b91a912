"""Benchmark plots: metric bars with baseline and ceiling lines, PCA of real vs generated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ..data import to_log1p
from ..evaluate import LOWER_IS_BETTER, align_genes, dense_rows, fit_pca
from ._utils import (
    PRED_COLOR,
    REAL_COLOR,
    category_colors,
    condition_mask,
    finish,
    method_colors,
    order_free,
    panel_axes,
)


def benchmark_bars(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    baseline: str | None = "mean",
    ceiling: str | None = "ceiling",
    methods: Sequence[str] | None = None,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.0, 2.6),
    ax=None,
    save=None,
):
    """Mean of each metric per method as bars, with the baseline and ceiling as lines.

    Parameters
    ----------
    df
        Tidy output of :func:`scdit.evaluate.evaluate` or :func:`scdit.evaluate.benchmark`.
    metrics
        Metrics to show (default all in ``df``).
    baseline, ceiling
        Methods drawn as horizontal lines (dashed: baseline, dotted: ceiling) instead of bars;
        None (or absent from ``df``) draws no line.
    methods
        Methods drawn as bars, in order (default all but the ceiling, in order of appearance).
    ncols, panel_size
        Grid columns and panel size (inches).
    ax
        Axes to draw into (one per metric); default a new figure.
    save
        Path to save the figure to.

    Returns
    -------
    The :class:`matplotlib.figure.Figure`; error bars are standard errors over the rows of
    ``df`` (conditions, covariates, seeds).
    """
    need = {"method", "metric", "value"}
    if not need <= set(df.columns):
        raise ValueError(f"df lacks column(s) {sorted(need - set(df.columns))}.")
    metrics = list(dict.fromkeys(df["metric"])) if metrics is None else list(metrics)
    present = list(dict.fromkeys(df["method"]))
    if methods is None:
        methods = [m for m in present if m != ceiling]
    g = df[df["metric"].isin(metrics)].groupby(["metric", "method"], sort=False)["value"]
    mean = g.mean().unstack("method").reindex(index=metrics)
    sem = g.sem().unstack("method").reindex(index=metrics)
    palette = method_colors(present)
    fig, axes = panel_axes(len(metrics), ax, ncols=ncols, panel_size=panel_size, what="metrics")
    x = np.arange(len(methods))
    for metric, a in zip(metrics, axes, strict=True):
        h = np.array([mean.at[metric, m] if m in mean else np.nan for m in methods], float)
        e = np.array([sem.at[metric, m] if m in sem else np.nan for m in methods], float)
        a.bar(x, np.nan_to_num(h), yerr=np.nan_to_num(e), capsize=2, error_kw={"lw": 0.8},
              color=[palette.get(m, PRED_COLOR) for m in methods])
        for xi, hi in zip(x, h, strict=True):
            if np.isnan(hi):
                a.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
        for ref, ls in ((baseline, "--"), (ceiling, ":")):
            if ref is not None and ref in mean and np.isfinite(mean.at[metric, ref]):
                a.axhline(mean.at[metric, ref], ls=ls, lw=1.2, color=palette.get(ref, "0.2"),
                          label=ref)
        a.axhline(0, color="0.3", lw=0.6)
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        a.set_title(f"{metric} {arrow}", fontsize=9)
        a.set_xticks(x, methods, rotation=45, ha="right", fontsize=7)
        a.tick_params(axis="y", labelsize=7)
    if axes and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6, frameon=False)
    return finish(fig, save)


def pca_overlay(
    real: AnnData,
    pred: AnnData,
    condition_key: str,
    *,
    conditions: Sequence[str] | None = None,
    max_cells: int = 3000,
    seed: int = 0,
    panel_size: tuple[float, float] = (4.2, 4.0),
    ax=None,
    save=None,
):
    """Real and generated cells on the first two PCs of the real cells (fast, no UMAP).

    Both are converted to log1p (counts with ``normalize_total 1e4``); ``pred`` must contain
    ``real``'s genes. Left panel: coloured by source; right panel: by condition.

    Parameters
    ----------
    real, pred
        Real and generated cells with ``obs[condition_key]``.
    condition_key
        ``obs`` column with condition labels.
    conditions
        Only these conditions (default all).
    max_cells
        At most this many real and this many generated cells (seeded subsample).
    seed
        Seed of the subsampling.
    panel_size, ax, save
        Panel size (inches), two Axes to draw into, path to save to.

    Returns
    -------
    The :class:`matplotlib.figure.Figure`.
    """
    pred = align_genes(pred, real.var_names, "pred")
    rng = np.random.default_rng(seed)
    data = []
    for a in (real, pred):
        lab = order_free(a.obs[condition_key].astype(str).to_numpy())
        rows = np.flatnonzero(condition_mask(lab, conditions) if conditions is not None
                              else np.ones(a.n_obs, bool))
        if len(rows) > max_cells:
            rows = np.sort(rng.choice(rows, max_cells, replace=False))
        if len(rows) == 0:
            raise ValueError("No cells to plot.")
        data.append((dense_rows(to_log1p(a.X), rows), lab[rows]))
    (Xr, lr), (Xp, lp) = data
    center, comps = fit_pca(Xr, 2, seed)
    Zr, Zp = (Xr - center) @ comps, (Xp - center) @ comps
    if Zr.shape[1] < 2:
        Zr, Zp = np.pad(Zr, ((0, 0), (0, 2 - Zr.shape[1]))), np.pad(Zp, ((0, 0), (0, 2 - Zp.shape[1])))
    fig, axes = panel_axes(2, ax, ncols=2, panel_size=panel_size, what="panels")
    s = float(np.clip(6000 / (len(Zr) + len(Zp)), 2, 25))
    axes[0].scatter(Zr[:, 0], Zr[:, 1], s=s, lw=0, alpha=0.6, color=REAL_COLOR, label="real",
                    rasterized=True)
    axes[0].scatter(Zp[:, 0], Zp[:, 1], s=s, lw=0, alpha=0.6, color=PRED_COLOR,
                    label="generated", rasterized=True)
    axes[0].legend(fontsize=7, frameon=False)
    axes[0].set_title("real vs generated (PCA of real cells)", fontsize=9)
    cats = sorted(set(lr) | set(lp))
    colors = dict(zip(cats, category_colors(len(cats)), strict=True))
    axes[1].scatter(Zr[:, 0], Zr[:, 1], s=s, lw=0, alpha=0.5, marker="o",
                    c=[colors[c] for c in lr], rasterized=True)
    axes[1].scatter(Zp[:, 0], Zp[:, 1], s=s, lw=0.5, alpha=0.6, marker="x",
                    c=[colors[c] for c in lp], rasterized=True)
    if len(cats) <= 12:
        for c in cats:
            axes[1].scatter([], [], s=15, color=colors[c], label=c)
        axes[1].legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[1].set_title("by condition (o real, x generated)", fontsize=9)
    for a in axes:
        a.set_xlabel("PC1", fontsize=8)
        a.set_ylabel("PC2", fontsize=8)
        a.tick_params(labelsize=7)
    return finish(fig, save)
