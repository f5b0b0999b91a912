"""``evaluate``: score predicted cells against real cells, next to the standard baselines."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ..data import canonical_label, detect_control, split_label
from . import _metrics as M
from ._baselines import ALL_BASELINES, BASELINES, EffectSource
from ._de import group_stats, welch_t
from ._de import top_k_de as _top_k_de
from ._distribution import distribution_scores
from ._groups import align_genes, group_data

#: One-line definition of every metric ``evaluate`` reports (also in ``df.attrs``).
DEFINITIONS: dict[str, str] = {
    "pearson_delta": "Pearson corr(x̂_p − x̄_c, x̄_p − x̄_c) over all genes; x̄_c = real control "
    "mean of the same context, means of log1p(normalize_total 1e4) expression.",
    "pearson_delta_de": "Pearson Δ on the top-k DE genes of p vs control (real cells, Welch t, "
    "ranked by |t|).",
    "pearson_delta_pert_mean": "Systema: Pearson corr(x̂_p − μ, x̄_p − μ), μ = mean of the "
    "training perturbation centroids of the context (NaN for the mean baseline, which is μ).",
    "cosine_delta": "Cosine similarity of x̂_p − x̄_c and x̄_p − x̄_c over all genes "
    "(PerturBench cosine logFC).",
    "mse": "Mean squared error of mean expression x̂_p vs x̄_p over all genes.",
    "mae": "Mean absolute error of mean expression over all genes.",
    "mse_de": "Mean squared error of mean expression on the top-k DE genes.",
    "l2_top1000": "Euclidean distance of mean expression on the 1,000 genes most expressed in "
    "the real control of the context (Ahlmann-Eltze L2).",
    "r2_de": "scikit-learn R² (1 − SS_res/SS_tot, can be negative) of x̂_p vs x̄_p on the "
    "top-k DE genes.",
    "r2_pearson_de": "Squared Pearson correlation (scGen R²) of x̂_p vs x̄_p on the top-k DE genes.",
    "direction_accuracy": "Share of the top-k DE genes with sign(x̂_p − x̄_c) = sign(x̄_p − x̄_c).",
    "discrimination_cosine": "PDS: 1 − rank/(N−1) of the true δ_p among the real δ_q of all N "
    "evaluated conditions of the context by cosine distance to δ̂_p (ties at mid-rank; all "
    "perturbation target genes excluded); constant predictor = 0.5 on average.",
    "discrimination_l1": "PDS as discrimination_cosine with the L1 (Manhattan) distance.",
    "discrimination_l2": "PDS as discrimination_cosine with the L2 (Euclidean) distance.",
    "energy_distance": "Energy distance 2E‖x−y‖ − E‖x−x′‖ − E‖y−y′‖ with Euclidean (not "
    "squared) norms, V-statistic, between predicted and real cells in a PCA (n_pcs) fitted once "
    "on the real control + evaluated cells; ≤ max_cells_energy cells per group.",
    "energy_distance_sq": "E-distance of scPerturb (Peidli et al. 2024): squared Euclidean "
    "distances, within-set means over distinct pairs, = 2‖x̄−ȳ‖² − 2s_x/(n_x−1) − 2s_y/(n_y−1) "
    "(can be < 0), same PCA and cells as energy_distance. Not pertpy ≥ 1.0's Edistance, which "
    "is the Euclidean energy_distance.",
    "mmd": "Biased MMD² (V-statistic) with Gaussian RBF kernels averaged over bandwidths "
    "{0.5, 1, 2, 4} × the median pairwise distance of the context's real cells, same PCA and "
    "cells as energy_distance.",
}
METRICS: tuple[str, ...] = tuple(DEFINITIONS)
#: Metrics where lower is better (the others: higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"mse", "mae", "mse_de", "l2_top1000", "energy_distance", "energy_distance_sq", "mmd"}
)


def _target_genes(conditions, var_names: pd.Index, separator: str, control: str) -> np.ndarray:
    """Indices of all genes named as a member of any evaluated condition."""
    names = {m for c in conditions for m in split_label(c, control, separator)}
    return np.flatnonzero(var_names.isin(list(names)))


def _select_keys(P, R, control: str, conditions, covariate_key, separator) -> list:
    """Evaluated (condition, context) groups: in pred and real, with real control cells.

    Conditions are matched by canonical label (``"B+A"`` in pred is ``"A+B"`` in real).
    """
    ctrl_ctx = {k[1] for k in R.keys if k[0] == control}
    if conditions is not None:
        conditions = [str(c) for c in conditions]
        if control in conditions:
            raise ValueError(f"`conditions` contains the control label {control!r}.")
        canon = {c: canonical_label(c, control, separator) for c in conditions}
        for name, G in (("real", R), ("pred", P)):
            have = {k[0] for k in G.keys}
            missing = [c for c in conditions if canon[c] not in have]
            if missing:
                raise ValueError(f"Conditions missing from `{name}`: {missing}.")
        wanted = set(canon.values())
    else:
        wanted = {k[0] for k in P.keys} & {k[0] for k in R.keys} - {control}
    keys = [k for k in R.keys if k[0] in wanted and k in P.index]
    no_ctrl = sorted({str(k[1]) for k in keys if k[1] not in ctrl_ctx})
    if no_ctrl:
        warnings.warn(
            f"No real control cells for {covariate_key}={no_ctrl}; those groups are skipped.",
            stacklevel=3,
        )
    keys = [k for k in keys if k[1] in ctrl_ctx]
    if not keys:
        raise ValueError("No condition to evaluate: none is present in both `pred` and `real`.")
    return keys


def evaluate(
    pred: AnnData,
    real: AnnData,
    condition_key: str,
    *,
    control: str | None = None,
    train: AnnData | None = None,
    conditions: Sequence[str] | None = None,
    covariate_key: str | None = None,
    separator: str = "+",
    baselines: Sequence[str] = BASELINES,
    top_k_de: int = 20,
    n_pcs: int = 30,
    max_cells_energy: int = 2000,
    seed: int = 0,
    method_name: str = "scdit",
    layer: str | None = None,
    perturbation_embedding: pd.DataFrame | None = None,
    linear: dict | None = None,
) -> pd.DataFrame:
    """Score predicted cells against real cells, next to baselines and the split-half ceiling.

    All scores use log1p(normalize_total 1e4) expression in the full gene space; each AnnData is
    converted independently (raw counts are detected and normalised). Deltas are always taken to
    the *real* control cells of the same context.

    Parameters
    ----------
    pred
        Generated cells; ``obs[condition_key]`` labels the condition (and
        ``obs[covariate_key]`` the context). Must contain every gene of ``real`` (matched by
        name; extra genes are dropped). Its ``.X`` is used.
    real
        Real cells: the control cells of every context and the evaluated conditions.
    condition_key
        ``obs`` column with the condition labels.
    control
        Control label; auto-detected among control/ctrl/non-targeting/NT/DMSO/vehicle if None.
    train
        Training cells, the source of the baselines' perturbation effects and of Systema's μ
        (used as is). If None, ``real``'s other groups are used, leaving the evaluated
        (condition, context) group out.
    conditions
        Conditions to score; default all non-control conditions present in ``pred`` and ``real``.
    covariate_key
        Optional context column (cell type, cell line...): deltas use the control cells of the
        same context and each (condition, context) group is scored separately.
    separator
        Separator of combination labels (``"A+B"``). Conditions are matched order-free by
        their members (a prediction labelled ``"B+A"`` is scored against real ``"A+B"`` cells
        and reported under the label written in ``real``); also used by ``additive`` and for
        the target genes.
    baselines
        Baselines to report next to the prediction (default :data:`BASELINES`; all are in
        :data:`ALL_BASELINES` and ``docs/evaluation.md``): any of ``no_change``, ``mean``,
        ``mean_cell_weighted``, ``seen_mean`` (the condition's own effect in ``train``: the
        baseline of seen perturbations; without ``train`` only the condition's other contexts
        in ``real`` remain, i.e. ``context_shift``), ``additive`` (only for combinations
        whose members all have known effects; other rows are skipped), ``additive_shrunk``
        (additive from empirical-Bayes shrunk member effects), ``context_shift`` (the
        condition's effect in the other contexts: the mean shift for a held-out context),
        ``context_estimate`` (the held-out-context estimate that sets a model's mean by
        default), ``linear`` (Ahlmann-Eltze ridge model; only where every member has an
        embedding) and ``ceiling`` (split-half agreement: half of the real cells of each group,
        seeded, scored against the other half, which then plays the real group). A baseline
        that does not apply to a condition has no rows for it.
    top_k_de
        Number of DE genes (real p vs real control, Welch t, ranked by ``|t|``) for the ``*_de``
        metrics and direction accuracy.
    n_pcs
        PCA components for the distribution metrics (energy distance, E-distance, MMD).
    max_cells_energy
        Cells per group (seeded subsample) for the distribution metrics and the PCA fit.
    seed
        Seed of the random choices that remain: the subsample of cells of groups larger than
        ``max_cells_energy`` (distribution metrics and their PCA), the 1,000 cells of a
        context from which the MMD bandwidth is taken when it has more real cells, and the
        ceiling's halves. The PCA itself is exact (:func:`~scdit.evaluate.fit_pca`), so
        without subsampling the scores do not depend on ``seed`` (except ``ceiling``).
    method_name
        Name of the prediction in the ``method`` column.
    layer
        Layer of ``real`` and ``train`` to use instead of ``.X``.
    perturbation_embedding
        Embedding of the linear baseline: DataFrame indexed by single-perturbation label (default:
        the target gene's row of the gene PCs, see :mod:`scdit.evaluate._linear`).
    linear
        Other keyword arguments of the linear baseline (``n_pcs=10``, ``ridge=0.1``).

    Returns
    -------
    Long DataFrame with columns ``method, condition, covariate, metric, value`` (``covariate``
    is None without ``covariate_key``); ``df.attrs["definitions"]`` maps metric → definition
    and ``df.attrs["settings"]`` records the control label, baseline source and parameters.

    Notes
    -----
    * ``no_change`` predicts δ̂ = 0: its delta correlations are NaN (undefined), its direction
      accuracy 0 and its discrimination 0.5 (a constant predictor).
    * Without ``train`` the ``mean`` baseline of p averages the *other* conditions' effects; this
      leave-one-out prediction is pulled away from δ_p, so its discrimination falls below 0.5
      (it is not a constant predictor). Pass ``train`` for the textbook mean baseline.
    * Discrimination ranks within a context among all evaluated conditions of that context.
    """
    bad = [b for b in baselines if b not in ALL_BASELINES]
    if bad:
        raise ValueError(f"Unknown baselines {bad}; choose from {ALL_BASELINES}.")
    if method_name in baselines:
        raise ValueError(f"method_name {method_name!r} clashes with a baseline name.")
    if condition_key not in real.obs:
        raise KeyError(f"`real.obs` has no column {condition_key!r}.")
    control = detect_control(real.obs[condition_key], control)
    pred = align_genes(pred, real.var_names, "pred")
    labels = {"control": control, "separator": separator}  # order-free grouping
    R = group_data(real, condition_key, covariate_key, layer=layer, with_var=True, name="real",
                   **labels)
    P = group_data(pred, condition_key, covariate_key, name="pred", **labels)
    if train is not None:
        train = align_genes(train, real.var_names, "train")
        S = group_data(train, condition_key, covariate_key, layer=layer, with_var=True,
                       name="train", **labels)
    else:
        S = R
    keys = _select_keys(P, R, control, conditions, covariate_key, separator)
    ctrl_means = {k[1]: R.mean[i] for i, k in enumerate(R.keys) if k[0] == control}
    source = EffectSource(S, control, ctrl_means, separator, leave_out=train is None,
                          var_names=real.var_names, embedding=perturbation_embedding,
                          linear=linear)
    n_genes = real.n_vars

    # per-group real statistics and DE genes
    ri = np.array([R.index[k] for k in keys])
    ci = np.array([R.index[(control, k[1])] for k in keys])
    real_mean, ctrl_mean = R.mean[ri], R.mean[ci]
    t = welch_t(real_mean, R.var[ri], R.n[ri][:, None], ctrl_mean, R.var[ci], R.n[ci][:, None])
    de = _top_k_de(t, top_k_de, diff=real_mean - ctrl_mean)
    top_expr = _top_k_de(ctrl_mean, 1000)
    pert_mu = np.full_like(real_mean, np.nan)
    for i, k in enumerate(keys):
        mu = source.pert_mean(k, ctrl_mean[i])
        if mu is not None:
            pert_mu[i] = mu

    # every method: predicted means (NaN row = not applicable) and the real means it is scored
    # against (the other half of the real cells for the ceiling)
    shift_kinds = [b for b in baselines if b != "ceiling"]
    shifts = {kind: [source.shift(kind, k, n_genes) for k in keys] for kind in shift_kinds}
    halves = _halves(R, keys, seed) if "ceiling" in baselines else None
    dist, n_pcs_used = distribution_scores(
        R, P, keys, control, shifts, method_name, n_pcs=n_pcs, max_cells=max_cells_energy,
        seed=seed, halves=halves,
    )
    methods = {method_name: (P.mean[[P.index[k] for k in keys]], real_mean)}
    for kind, sh in shifts.items():
        means = np.array(
            [np.full(n_genes, np.nan) if d is None else ctrl_mean[i] + d for i, d in enumerate(sh)]
        ).reshape(len(keys), n_genes)
        methods[kind] = (means, real_mean)
    if halves is not None:
        methods["ceiling"] = _half_means(R, keys, halves)
    targets = _target_genes([k[0] for k in keys], real.var_names, separator, control)
    ctx_rows = {c: np.array([i for i, k in enumerate(keys) if k[1] == c])
                for c in dict.fromkeys(k[1] for k in keys)}
    rows = []
    for name, (means, truth) in methods.items():
        # baselines that do not apply are NaN rows; a NaN prediction is scored (as NaN)
        has = np.ones(len(keys), bool) if name == method_name else ~np.isnan(means).any(1)
        if not has.any():
            continue
        scores = _score(means, truth, ctrl_mean, pert_mu, de, top_expr)
        scores.update(dist[name])
        truth_delta = truth - ctrl_mean
        for metric in ("cosine", "l1", "l2"):
            disc = np.full(len(keys), np.nan)
            for cand in ctx_rows.values():
                sel = cand[has[cand]]
                if sel.size:
                    disc[sel] = M.discrimination(
                        means[sel] - ctrl_mean[sel], truth_delta[cand], metric,
                        exclude_genes=targets, true_index=np.searchsorted(cand, sel),
                    )
            scores[f"discrimination_{metric}"] = disc
        for i in np.flatnonzero(has):
            cond, ctx = keys[i]
            rows += [(name, R.label(cond), ctx, m, float(scores[m][i])) for m in METRICS]
    df = pd.DataFrame(rows, columns=["method", "condition", "covariate", "metric", "value"])
    df.attrs["definitions"] = dict(DEFINITIONS)
    df.attrs["settings"] = {
        "control": control,
        "condition_key": condition_key,
        "covariate_key": covariate_key,
        "top_k_de": top_k_de,
        "n_pcs": n_pcs_used,
        "max_cells_energy": max_cells_energy,
        "seed": seed,
        "baseline_source": "train" if train is not None else "real (leave-one-out)",
        "representation": "log1p(normalize_total 1e4)",
    }
    return df


def _halves(R, keys: list, seed: int) -> dict:
    """Two random halves (seeded) of the real cells of every group, for the ceiling."""
    rng = np.random.default_rng([seed, 7919])
    out = {}
    for k in keys:
        rows = rng.permutation(R.cells(k))
        h = len(rows) // 2
        out[k] = (np.sort(rows[:h]), np.sort(rows[h : 2 * h]))
    return out


def _half_means(R, keys: list, halves: dict) -> tuple[np.ndarray, np.ndarray]:
    """Means of the first halves (the "prediction") and second halves (the "truth")."""
    codes = np.full(R.X.shape[0], -1)
    for i, k in enumerate(keys):
        a, b = halves[k]
        codes[a], codes[b] = 2 * i, 2 * i + 1
    n, mean, _ = group_stats(R.X, codes, 2 * len(keys), with_var=False)
    mean[n == 0] = np.nan
    return mean[0::2], mean[1::2]


def _score(means, real_mean, ctrl_mean, pert_mu, de, top_expr) -> dict[str, np.ndarray]:
    """All mean-based metrics for a batch of groups (rows)."""
    pred_delta = means - ctrl_mean
    real_delta = real_mean - ctrl_mean
    return {
        "pearson_delta": M.pearson_delta(means, real_mean, ctrl_mean),
        "pearson_delta_de": M.pearson_delta(means, real_mean, ctrl_mean, genes=de),
        "pearson_delta_pert_mean": M.pearson_delta_pert_mean(means, real_mean, pert_mu),
        "cosine_delta": M.cosine_delta(means, real_mean, ctrl_mean),
        "mse": M.mse(means, real_mean),
        "mae": M.mae(means, real_mean),
        "mse_de": M.mse(means, real_mean, genes=de),
        "l2_top1000": M.l2(means, real_mean, genes=top_expr),
        "r2_de": M.r2_score(means, real_mean, genes=de),
        "r2_pearson_de": M.pearson(M._take(means, de), M._take(real_mean, de)) ** 2,
        "direction_accuracy": M.direction_accuracy(pred_delta, real_delta, genes=de),
    }
