"""Predicted vs real perturbation effects (Δ to the real control mean), one panel per condition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from anndata import AnnData

from ..data import canonical_label, detect_control
from ..evaluate import align_genes, group_data
from ..evaluate import metrics as M
from ._utils import finish, method_colors, panel_axes


def _keys(P, R, control: str, conditions, name: str) -> list:
    ctrl_ctx = {k[1] for k in R.keys if k[0] == control}
    if conditions is None:
        have = {k for k in P.keys if k[0] != control}
        keys = [k for k in R.keys if k in have and k[1] in ctrl_ctx]
        if not keys:
            raise ValueError(f"No condition of `{name}` is in `real` (with real control cells).")
        return keys
    conditions = [conditions] if isinstance(conditions, str) else [str(c) for c in conditions]
    if control in conditions:
        raise ValueError(f"`conditions` contains the control label {control!r}.")
    keys = []
    for c in conditions:
        canon = canonical_label(c, control)
        found = [k for k in R.keys if k[0] == canon and k[1] in ctrl_ctx and k in P.index]
        if not found:
            raise ValueError(f"Condition {c!r} is missing from `{name}` or `real` (or has no "
                             "real control cells in its context).")
        keys += found
    return keys


def delta_scatter(
    pred: AnnData,
    real: AnnData,
    condition_key: str,
    control: str | None = None,
    conditions: Sequence[str] | None = None,
    *,
    baseline: AnnData | Mapping[str, AnnData] | None = None,
    baseline_label: str = "additive",
    label: str = "scdit",
    covariate_key: str | None = None,
    layer: str | None = None,
    label_genes: int = 0,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.2, 3.2),
    point_size: float = 8.0,
    ax=None,
    save=None,
):
    """Scatter predicted vs real Δ over genes, one panel per condition, Pearson r in the title.

    Δ is the mean log1p expression of a condition minus the mean of the *real* control cells of
    the same context; counts are converted with ``log1p(normalize_total 1e4)`` as in
    :func:`scdit.evaluate.evaluate`, so the r in each title equals its ``pearson_delta``.

    Parameters
    ----------
    pred
        Predicted (generated) cells with ``obs[condition_key]``; must contain ``real``'s genes.
    real
        Real cells: the evaluated conditions and the control cells.
    condition_key
        ``obs`` column with condition labels.
    control
        Control label; auto-detected (``control``, ``ctrl``, ``non-targeting``, ...) if None.
    conditions
        Conditions to plot (in this order); default all non-control conditions in both.
    baseline
        Optional baseline prediction(s) to overlay, e.g. the additive baseline from
        :func:`scdit.evaluate.baseline_predictions`: an AnnData (named ``baseline_label``) or a
        mapping name → AnnData. Conditions a baseline lacks are drawn without it.
    baseline_label, label
        Legend names of the baseline and of ``pred``.
    covariate_key
        Optional context column (cell type, ...): one panel per (condition, context), deltas to
        the control cells of the same context.
    layer
        Layer of ``real`` to use instead of ``.X``.
    label_genes
        Annotate this many genes, those with the largest real ``|Δ|``, in each panel.
    ncols, panel_size, point_size
        Grid columns, size of a panel (inches) and marker size.
    ax
        Axes to draw into (one per panel); default a new figure.
    save
        Path to save the figure to.

    Returns
    -------
    The :class:`matplotlib.figure.Figure`. Its ``scdit_pearson`` attribute maps
    ``(condition, context)`` → ``{label: r, baseline name: r}``.
    """
    if condition_key not in real.obs:
        raise KeyError(f"`real.obs` has no column {condition_key!r}.")
    control = detect_control(real.obs[condition_key], control)
    if isinstance(baseline, AnnData):
        baseline = {baseline_label: baseline}
    baseline = dict(baseline or {})
    if label in baseline:
        raise ValueError(f"label {label!r} clashes with a baseline name.")
    R = group_data(real, condition_key, covariate_key, layer=layer, name="real", control=control)
    P = group_data(align_genes(pred, real.var_names, "pred"), condition_key, covariate_key,
                   name="pred", control=control)
    B = {name: group_data(align_genes(b, real.var_names, name), condition_key, covariate_key,
                          name=name, control=control) for name, b in baseline.items()}
    keys = _keys(P, R, control, conditions, "pred")
    colors = method_colors([label, *B])
    fig, axes = panel_axes(len(keys), ax, ncols=ncols, panel_size=panel_size, what="conditions")
    genes = np.asarray(real.var_names.astype(str))
    scores: dict = {}
    for i, (key, a) in enumerate(zip(keys, axes, strict=True)):
        ctrl = R.mean_of((control, key[1]))
        real_d = R.mean_of(key) - ctrl
        series = []
        for name, G in B.items():
            m = G.mean_of(key)
            if m is not None:
                series.append((name, m - ctrl, colors[name], 0.6))
        series.append((label, P.mean_of(key) - ctrl, colors[label], 0.8))
        r = {name: float(M.pearson(d, real_d)) for name, d, _, _ in series}
        written = (R.label(key[0]), key[1])  # the condition as written in `real`
        scores[written] = {label: r[label], **{k: v for k, v in r.items() if k != label}}
        vals = np.abs(np.concatenate([real_d, *[s[1] for s in series]]))
        vals = vals[np.isfinite(vals)]
        lim = max(float(vals.max()) if vals.size else 0.0, 1e-3) * 1.08
        a.axhline(0, color="0.85", lw=0.8, zorder=0)
        a.axvline(0, color="0.85", lw=0.8, zorder=0)
        a.plot([-lim, lim], [-lim, lim], ls="--", color="0.5", lw=0.8, zorder=1)
        for name, d, color, alpha in series:
            a.scatter(real_d, d, s=point_size, color=color, alpha=alpha, lw=0, zorder=2,
                      label=name)
        if label_genes > 0:
            top = np.argsort(-np.abs(real_d))[: int(label_genes)]
            for g in top:
                a.annotate(genes[g], (real_d[g], series[-1][1][g]), fontsize=6,
                           xytext=(2, 2), textcoords="offset points")
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_aspect("equal", adjustable="box")
        title = str(written[0]) if key[1] is None else f"{written[0]} | {key[1]}"
        if len(r) > 1:
            rs = f"r: {label} {r[label]:.2f} · " + " · ".join(
                f"{n} {v:.2f}" for n, v in r.items() if n != label)
        else:
            rs = f"r = {r[label]:.2f}"
        a.set_title(f"{title}\n{rs}", fontsize=9)
        a.tick_params(labelsize=7)
        if i % max(1, min(ncols, len(keys))) == 0 or ax is not None:
            a.set_ylabel("predicted Δ", fontsize=8)
        a.set_xlabel("real Δ", fontsize=8)
        if i == 0 and B:
            a.legend(fontsize=6, loc="upper left", frameon=False, markerscale=1.5)
    fig.scdit_pearson = scores
    return finish(fig, save)
