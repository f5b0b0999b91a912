"""Baseline predictors (no change, mean, additive, context shift, linear) from a source's effects.

A baseline for condition ``p`` in context ``ctx`` (a covariate value, or ``None``) is the real
control cells of ``ctx`` shifted by a vector in log1p space:

* ``no_change``: shift 0;
* ``mean``: the centroid-average of the perturbation effects ``δ_q = x̄_q − x̄_ctrl`` of the
  source's non-control groups (same context if it has any, else all contexts);
* ``mean_cell_weighted``: as ``mean`` but each group weighted by its number of cells;
* ``seen_mean`` (the condition was seen in the source): the condition's own effect, from the
  same context if the source has it there, else averaged over the contexts that have it —
  what a model reproducing a perturbation's training mean predicts; absent when the source
  does not have the condition (when the source is ``real``, whose evaluated group is left out,
  only the condition's other contexts remain: then it is ``context_shift``, or absent without
  covariates);
* ``additive`` (combinations ``A+B[+C]``): ``Σ δ_member``, each member's effect from the same
  context if available, else averaged over the contexts that have it;
* ``additive_shrunk``: as ``additive`` but each member's effect replaced by its empirical-Bayes
  posterior mean (:class:`scdit.effects.EffectTable`: Gaussian prior with covariance from all
  source effects of the member's context, noise = squared standard errors of the two means)
  where the context has at least :data:`scdit.effects.MIN_EFFECTS` effects, else the raw
  effect. The same code sets the mean of a model's unseen combinations by default
  (``predict(effects="auto")``); report it to see what the generator adds;
* ``context_shift`` (the scGen/CellFlow "mean shift" for a held-out context): the same
  condition's effect averaged over the *other* contexts that have it (NaN where none has);
* ``context_estimate``: the held-out-context estimate that sets a model's mean by default
  (:class:`scdit.effects.HeldOutContext`: LOCO-chosen mean shift / kernel / slope from the
  other contexts, at this context's real control mean, projected onto the top principal axes
  of the source cells' expression; NaN with fewer than two other contexts);
* ``linear``: the ridge model ``Y ≈ G K Pᵀ + b`` of Ahlmann-Eltze et al. (2025) fitted on the
  source's effects (all contexts pooled; see :mod:`scdit.evaluate._linear`).

``ceiling`` (split-half agreement of the real cells) is computed by ``evaluate`` itself.

The source is ``train`` when given (used as is), else ``real`` with the evaluated group
``(p, ctx)`` left out, so a baseline never sees the cells it is scored against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ..data import canonical_label, detect_control, split_label
from ..effects import (
    EFFECT_RANK,
    MIN_EFFECTS,
    EffectTable,
    HeldOutContext,
    expression_basis,
    project_effect,
)
from ._groups import GroupedData, Key, align_genes, group_data
from ._linear import LinearBaseline

#: Baselines ``evaluate`` reports by default.
BASELINES: tuple[str, ...] = ("no_change", "mean", "additive", "context_shift")
#: Every baseline ``evaluate`` can report (``ceiling`` only there, not as predicted cells).
ALL_BASELINES: tuple[str, ...] = (
    "no_change",
    "mean",
    "mean_cell_weighted",
    "seen_mean",
    "additive",
    "additive_shrunk",
    "context_shift",
    "context_estimate",
    "linear",
    "ceiling",
)
SHIFT_BASELINES: tuple[str, ...] = tuple(b for b in ALL_BASELINES if b != "ceiling")


class EffectSource:
    """Perturbation effects of a source (train, or real with the evaluated group left out).

    ``leave_out=True`` drops the evaluated ``(condition, context)`` group from every average
    (and refits the linear model without it). ``var_names``, ``embedding`` and ``linear`` (keyword
    arguments of :class:`~scdit.evaluate._linear.LinearBaseline`) configure the linear baseline.
    """

    def __init__(
        self,
        src: GroupedData,
        control: str,
        ctrl_means: dict,
        separator: str = "+",
        *,
        leave_out: bool = True,
        var_names=None,
        embedding: pd.DataFrame | None = None,
        linear: dict | None = None,
    ):
        self.control = control
        self.leave_out = leave_out
        self.separator = separator
        self.var_names = var_names
        self.embedding = embedding
        self.linear_kwargs = dict(linear or {})
        self._linear: dict = {}
        self.centroids: dict[Key, np.ndarray] = {}
        self.effects: dict[Key, np.ndarray] = {}
        self.n_cells: dict[Key, float] = {}
        self.noise: dict[Key, np.ndarray] = {}  # squared standard error of each effect
        self.by_members: dict[tuple, list[Key]] = {}
        self.src = src
        self.ctrl_means = ctrl_means
        self._tables: dict = {}
        self._bases: dict = {}
        self._estimators: dict = {}
        for key in src.keys:
            cond, ctx = key
            if cond == control:
                continue
            ctrl = src.mean_of((control, ctx))
            if ctrl is None:
                ctrl = ctrl_means.get(ctx)
            self.centroids[key] = src.mean_of(key)
            if ctrl is None:
                continue
            self.effects[key] = src.mean_of(key) - ctrl
            self.n_cells[key] = float(src.n[src.index[key]])
            i, ic = src.index[key], src.index.get((control, ctx))
            if src.var is not None and ic is not None and src.n[i] >= 2 and src.n[ic] >= 2:
                self.noise[key] = src.var[i] / src.n[i] + src.var[ic] / src.n[ic]
            members = split_label(cond, control, separator)
            self.by_members.setdefault(members, []).append(key)

    def _excluded(self, k: Key, key: Key) -> bool:
        return self.leave_out and k == key

    def mean_shift(self, key: Key, weighted: bool = False) -> np.ndarray | None:
        """Average effect of the other groups, same context first, else all contexts.

        Centroid average (each group counts once), or cell-weighted with ``weighted=True``.
        """
        others = [k for k in self.effects if not self._excluded(k, key)]
        same = [k for k in others if k[1] == key[1]]
        use = same or others
        if not use:
            return None
        w = [self.n_cells[k] for k in use] if weighted else None
        return np.average([self.effects[k] for k in use], axis=0, weights=w)

    def linear_shift(self, key: Key) -> np.ndarray | None:
        """Effect predicted by the linear baseline fitted on the (other) source groups."""
        if self.var_names is None:
            raise ValueError("The linear baseline needs var_names.")
        cache = key if self.leave_out else None
        if cache not in self._linear:
            effects = {k: v for k, v in self.effects.items() if not self._excluded(k, key)}
            self._linear[cache] = LinearBaseline(
                effects,
                self.var_names,
                control=self.control,
                separator=self.separator,
                embedding=self.embedding,
                **self.linear_kwargs,
            )
        return self._linear[cache].predict(key[0])

    def additive_shift(self, key: Key, shrunk: bool = False) -> np.ndarray | None:
        """``Σ δ_member`` for a combination, or None (not a combination / a member unknown).

        With ``shrunk``, each member's effect is its empirical-Bayes posterior mean
        (``additive_shrunk``).
        """
        members = split_label(key[0], self.control, self.separator)
        if len(members) < 2:
            return None
        total = 0.0
        for m in members:
            keys = [k for k in self.by_members.get((m,), []) if not self._excluded(k, key)]
            same = [k for k in keys if k[1] == key[1]]
            if not (same or keys):
                return None
            total = total + np.mean([self._shrunk_effect(k, key) if shrunk else self.effects[k]
                                     for k in same or keys], axis=0)
        return total

    def _table(self, key: Key) -> EffectTable:
        """The source's effect table (:class:`scdit.effects.EffectTable`, genes), without the
        evaluated group ``key`` when leaving it out; cached."""
        exclude = key if self.leave_out else None
        if exclude not in self._tables:
            src, ctrl = self.src, canonical_label(self.control, self.control, self.separator)
            moments = {}
            for i, k in enumerate(src.keys):
                if k == exclude:
                    continue
                se2 = src.var[i] / src.n[i] if src.var is not None and src.n[i] >= 2 else None
                lab = canonical_label(k[0], self.control, self.separator)
                moments[(lab, (k[1],))] = (src.mean[i], se2)
            labels = [canonical_label(k[0], self.control, self.separator) for k in src.keys]
            row_labels = np.asarray(labels, dtype=object)[src.codes]
            row_ctx = [(src.keys[c][1],) for c in src.codes]
            self._tables[exclude] = EffectTable(lambda rows: src.X[rows], row_labels, row_ctx,
                                                ctrl, moments=moments)
        return self._tables[exclude]

    def _shrunk_effect(self, k: Key, key: Key) -> np.ndarray:
        """Effect of group ``k``, shrunk by the prior of its context (``key`` left out) where
        the context has at least :data:`scdit.effects.MIN_EFFECTS` effects (the same rule and
        code as the model's default shrinkage)."""
        table = self._table(key)
        ctx, lab = (k[1],), canonical_label(k[0], self.control, self.separator)
        prior = table.prior(ctx)
        if prior is None or prior[1] < MIN_EFFECTS or k not in self.noise:
            return self.effects[k]
        return table.shrunk_mean(lab, ctx) - table.mean(table.control, ctx)

    def context_estimate(self, key: Key) -> np.ndarray | None:
        """The model's held-out-context estimate (:class:`scdit.effects.HeldOutContext`):
        from the other contexts with the condition and control, the LOCO-chosen mean shift,
        kernel or slope, evaluated at this context's real control mean, then projected onto
        the top principal axes of the source cells' expression (the evaluated group left out
        when the source is ``real``); ``None`` with fewer than two such contexts."""
        table = self._table(key)
        ctx = (key[1],)
        lab = canonical_label(key[0], self.control, self.separator)
        c = self.ctrl_means.get(key[1])
        if c is None:
            return None
        if id(table) not in self._estimators:
            self._estimators[id(table)] = HeldOutContext(table)
        est = self._estimators[id(table)].estimate(lab, ctx, np.asarray(c, dtype=np.float64))
        if est is None:
            return None
        return project_effect(est.info["effect"], self._expression_basis(key))

    def _expression_basis(self, key: Key) -> np.ndarray | None:
        """Top principal axes of the source cells (without the group ``key`` when leaving it
        out, so that a baseline never sees the cells it is scored against); cached."""
        exclude = key if self.leave_out else None
        if exclude not in self._bases:
            rows = np.arange(self.src.X.shape[0])
            if exclude is not None and exclude in self.src.index:
                rows = np.flatnonzero(self.src.codes != self.src.index[exclude])
            self._bases[exclude] = expression_basis(self.src.X[rows], EFFECT_RANK)
        return self._bases[exclude]

    def seen_shift(self, key: Key) -> np.ndarray | None:
        """The condition's own effect (same context first, else averaged over contexts)."""
        members = split_label(key[0], self.control, self.separator)
        keys = [k for k in self.by_members.get(members, []) if not self._excluded(k, key)]
        same = [k for k in keys if k[1] == key[1]]
        if not (same or keys):
            return None
        return np.mean([self.effects[k] for k in same or keys], axis=0)

    def context_shift(self, key: Key) -> np.ndarray | None:
        """Effect of the same condition averaged over the other contexts, or None."""
        members = split_label(key[0], self.control, self.separator)
        keys = [k for k in self.by_members.get(members, [])
                if k[1] != key[1] and not self._excluded(k, key)]
        if not keys:
            return None
        return np.mean([self.effects[k] for k in keys], axis=0)

    def shift(self, kind: str, key: Key, n_genes: int) -> np.ndarray | None:
        """Shift vector of baseline ``kind`` for ``key``, or None where it does not apply."""
        if kind == "no_change":
            return np.zeros(n_genes)
        if kind == "mean":
            return self.mean_shift(key)
        if kind == "mean_cell_weighted":
            return self.mean_shift(key, weighted=True)
        if kind == "seen_mean":
            return self.seen_shift(key)
        if kind == "additive":
            return self.additive_shift(key)
        if kind == "additive_shrunk":
            return self.additive_shift(key, shrunk=True)
        if kind == "context_shift":
            return self.context_shift(key)
        if kind == "context_estimate":
            return self.context_estimate(key)
        if kind == "linear":
            return self.linear_shift(key)
        raise ValueError(f"Unknown baseline {kind!r}; choose from {SHIFT_BASELINES}.")

    def pert_mean(self, key: Key, ctrl_mean: np.ndarray) -> np.ndarray | None:
        """Systema's μ: mean of the source's perturbation centroids in the same context (else the
        control plus the mean shift)."""
        same = [k for k in self.centroids if not self._excluded(k, key) and k[1] == key[1]]
        if same:
            return np.mean([self.centroids[k] for k in same], axis=0)
        shift = self.mean_shift(key)
        return None if shift is None else ctrl_mean + shift


def baseline_predictions(
    real: AnnData,
    condition_key: str,
    *,
    control: str | None = None,
    train: AnnData | None = None,
    conditions: Sequence[str] | None = None,
    covariate_key: str | None = None,
    separator: str = "+",
    baselines: Sequence[str] = BASELINES,
    layer: str | None = None,
    perturbation_embedding: pd.DataFrame | None = None,
    linear: dict | None = None,
) -> dict[str, AnnData]:
    """Build baseline predictions as AnnData of log1p cells, one per baseline.

    Each output holds, for every evaluated condition (and covariate value), a copy of the real
    control cells of that context shifted by the baseline's vector and clipped at 0 (so the
    means of genes a shift drives below zero differ slightly from the unclipped shift that
    ``evaluate`` scores for its own baseline rows), with ``obs[condition_key]``
    (and ``obs[covariate_key]``) set — so it can be passed to :func:`scdit.evaluate.evaluate`
    as ``pred``. Conditions a baseline does not apply to (``additive`` for singles) are absent.

    Parameters
    ----------
    real
        Real cells, including the control cells of every context.
    condition_key, control, train, conditions, covariate_key, separator, layer
        As in :func:`scdit.evaluate.evaluate`.
    baselines
        Any of ``"no_change"``, ``"mean"``, ``"mean_cell_weighted"``, ``"seen_mean"``,
        ``"additive"``, ``"linear"`` (not ``"ceiling"``, which only :func:`~scdit.evaluate.evaluate` computes).
    perturbation_embedding, linear
        Embedding and keyword arguments (``n_pcs``, ``ridge``) of the linear baseline.

    Returns
    -------
    Mapping baseline name → AnnData (``var_names`` of ``real``).
    """
    bad = [b for b in baselines if b not in SHIFT_BASELINES]
    if bad:
        raise ValueError(f"Unknown baselines {bad}; choose from {SHIFT_BASELINES}.")
    control = detect_control(real.obs[condition_key], control)
    grouping = {"layer": layer, "with_var": True, "control": control, "separator": separator}
    R = group_data(real, condition_key, covariate_key, name="real", **grouping)
    ctrl_means = {k[1]: R.mean[i] for i, k in enumerate(R.keys) if k[0] == control}
    if train is not None:
        train = align_genes(train, real.var_names, "train")
        S = group_data(train, condition_key, covariate_key, name="train", **grouping)
    else:
        S = R
    source = EffectSource(
        S,
        control,
        ctrl_means,
        separator,
        leave_out=train is None,
        var_names=real.var_names,
        embedding=perturbation_embedding,
        linear=linear,
    )
    wanted = None if conditions is None else {canonical_label(c, control, separator)
                                              for c in conditions}
    keys = [
        k
        for k in R.keys
        if k[0] != control and k[1] in ctrl_means and (wanted is None or k[0] in wanted)
    ]
    out = {}
    for kind in baselines:
        blocks, obs = [], []
        for key in keys:
            shift = source.shift(kind, key, real.n_vars)
            if shift is None:
                continue
            cells = R.X[R.cells((control, key[1]))]
            cells = np.asarray(cells.toarray() if hasattr(cells, "toarray") else cells)
            # cells, like log1p data, are never negative (evaluate refuses negative values)
            blocks.append(np.maximum(cells + shift, 0.0).astype(np.float32))
            obs.append(pd.DataFrame({condition_key: R.label(key[0])}, index=range(len(cells))))
            if covariate_key is not None:
                obs[-1][covariate_key] = key[1]
        X = np.vstack(blocks) if blocks else np.zeros((0, real.n_vars), dtype=np.float32)
        ob = pd.concat(obs, ignore_index=True) if obs else pd.DataFrame({condition_key: []})
        ob.index = ob.index.astype(str)
        out[kind] = AnnData(X=X, obs=ob, var=pd.DataFrame(index=real.var_names.copy()))
    return out
