"""Pure, vectorised perturbation-prediction metrics.

Every function works on the last axis, so a batch of conditions can be scored at once:
``(n_genes,)`` inputs give a float, ``(n_conditions, n_genes)`` inputs give one value per row.
Undefined values (a constant vector in a correlation, fewer than two candidates in a ranking)
are NaN rather than exceptions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

#: Standard deviations below this are treated as zero (constant vector → NaN correlation).
_EPS = 1e-10

DistanceMetric = Literal["cosine", "l1", "l2"]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _take(a: np.ndarray, genes: np.ndarray | None) -> np.ndarray:
    """Select genes on the last axis: ``genes`` is 1-D (shared) or 2-D (one index row per row)."""
    if genes is None:
        return a
    genes = np.asarray(genes)
    if genes.ndim == 1:
        return a[..., genes]
    return np.take_along_axis(np.broadcast_to(a, (genes.shape[0], a.shape[-1])), genes, axis=-1)


def _out(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def pearson(a, b) -> float | np.ndarray:
    """Pearson correlation of ``a`` and ``b`` along the last axis (NaN if either is constant).

    Parameters
    ----------
    a, b
        Arrays of equal (broadcastable) shape ``(..., n)``.

    Returns
    -------
    Correlation per leading index (a float for 1-D input).
    """
    a, b = np.broadcast_arrays(_f64(a), _f64(b))
    ac = a - a.mean(-1, keepdims=True)
    bc = b - b.mean(-1, keepdims=True)
    sa = np.sqrt((ac**2).mean(-1))
    sb = np.sqrt((bc**2).mean(-1))
    ok = (sa > _EPS) & (sb > _EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac * bc).mean(-1) / (sa * sb)
    return _out(np.where(ok, np.clip(r, -1.0, 1.0), np.nan))


def cosine_similarity(a, b) -> float | np.ndarray:
    """Cosine similarity along the last axis (NaN if either vector is zero)."""
    a, b = np.broadcast_arrays(_f64(a), _f64(b))
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    ok = (na > _EPS) & (nb > _EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (a * b).sum(-1) / (na * nb)
    return _out(np.where(ok, np.clip(c, -1.0, 1.0), np.nan))


def pearson_delta(pred_mean, real_mean, ctrl_mean, genes=None) -> float | np.ndarray:
    """Pearson correlation of predicted and real deltas to control, ``corr(x̂ − x̄_c, x̄ − x̄_c)``.

    Parameters
    ----------
    pred_mean, real_mean
        Predicted and real mean expression, ``(..., n_genes)``.
    ctrl_mean
        Real control mean of the same context, broadcastable to ``real_mean``.
    genes
        Optional gene indices: 1-D (shared) or 2-D (one row per condition, e.g. top-k DE genes).

    Returns
    -------
    Correlation per condition.
    """
    ctrl = _f64(ctrl_mean)
    return pearson(_take(_f64(pred_mean) - ctrl, genes), _take(_f64(real_mean) - ctrl, genes))


def pearson_delta_pert_mean(pred_mean, real_mean, pert_mean) -> float | np.ndarray:
    """Systema's correlation ``corr(x̂ − μ, x̄ − μ)`` with μ the mean of training perturbations.

    Parameters
    ----------
    pred_mean, real_mean
        Predicted and real mean expression, ``(..., n_genes)``.
    pert_mean
        μ, the average of the training perturbation centroids, broadcastable to ``real_mean``.

    Returns
    -------
    Correlation per condition (NaN when the prediction equals μ, e.g. the mean baseline).
    """
    mu = _f64(pert_mean)
    return pearson(_f64(pred_mean) - mu, _f64(real_mean) - mu)


def cosine_delta(pred_mean, real_mean, ctrl_mean) -> float | np.ndarray:
    """Cosine similarity of predicted and real deltas to control (PerturBench's cosine logFC)."""
    ctrl = _f64(ctrl_mean)
    return cosine_similarity(_f64(pred_mean) - ctrl, _f64(real_mean) - ctrl)


def mse(pred_mean, real_mean, genes=None) -> float | np.ndarray:
    """Mean squared error of mean expression, optionally on a gene subset (see ``pearson_delta``)."""
    diff = _take(_f64(pred_mean), genes) - _take(_f64(real_mean), genes)
    return _out((diff**2).mean(-1))


def mae(pred_mean, real_mean, genes=None) -> float | np.ndarray:
    """Mean absolute error of mean expression, optionally on a gene subset."""
    diff = _take(_f64(pred_mean), genes) - _take(_f64(real_mean), genes)
    return _out(np.abs(diff).mean(-1))


def l2(pred_mean, real_mean, genes=None) -> float | np.ndarray:
    """Euclidean distance between mean expression vectors, optionally on a gene subset."""
    diff = _take(_f64(pred_mean), genes) - _take(_f64(real_mean), genes)
    return _out(np.sqrt((diff**2).sum(-1)))


def r2_score(pred_mean, real_mean, genes=None) -> float | np.ndarray:
    """Coefficient of determination as in scikit-learn, real means as the truth.

    ``1 − Σ(x̂ − x̄)² / Σ(x̄ − mean(x̄))²`` over genes; can be negative; NaN if ``x̄`` is constant.
    """
    p = _take(_f64(pred_mean), genes)
    r = _take(_f64(real_mean), genes)
    p, r = np.broadcast_arrays(p, r)
    ss_tot = ((r - r.mean(-1, keepdims=True)) ** 2).sum(-1)
    ss_res = ((p - r) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.0 - ss_res / ss_tot
    return _out(np.where(ss_tot > _EPS**2, out, np.nan))


def direction_accuracy(pred_delta, real_delta, genes=None) -> float | np.ndarray:
    """Share of genes where the predicted delta has the sign of the real delta.

    Parameters
    ----------
    pred_delta, real_delta
        Deltas to the real control, ``(..., n_genes)``.
    genes
        Optional gene indices (typically the top-k DE genes of each condition).

    Returns
    -------
    Fraction in [0, 1] per condition (NaN for an empty gene set).
    """
    p = _take(_f64(pred_delta), genes)
    r = _take(_f64(real_delta), genes)
    if p.shape[-1] == 0:
        return _out(np.full(np.broadcast_shapes(p.shape, r.shape)[:-1], np.nan))
    return _out((np.sign(p) == np.sign(r)).mean(-1))


def pairwise_distances(a, b, metric: DistanceMetric = "cosine") -> np.ndarray:
    """Distances between the rows of ``a`` ``(m, n)`` and ``b`` ``(k, n)``, shape ``(m, k)``.

    ``cosine`` is ``1 − cos``, with the similarity of a zero vector taken as 0 (distance 1);
    ``l1`` and ``l2`` are the Manhattan and Euclidean distances.
    """
    a = _f64(a)
    b = _f64(b)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        an = np.divide(a, na[:, None], out=np.zeros_like(a), where=na[:, None] > _EPS)
        bn = np.divide(b, nb[:, None], out=np.zeros_like(b), where=nb[:, None] > _EPS)
        return 1.0 - np.clip(an @ bn.T, -1.0, 1.0)
    if metric in ("l1", "l2"):
        p = 1.0 if metric == "l1" else 2.0
        d = torch.cdist(
            torch.from_numpy(a),
            torch.from_numpy(b),
            p=p,
            compute_mode="donot_use_mm_for_euclid_dist",
        )
        return d.numpy()
    raise ValueError(f"Unknown distance metric {metric!r}; use 'cosine', 'l1' or 'l2'.")


def discrimination(
    pred_deltas,
    real_deltas,
    metric: DistanceMetric = "cosine",
    *,
    exclude_genes=None,
    true_index=None,
    rtol: float = 1e-9,
) -> np.ndarray:
    """Perturbation discrimination score (PDS) for each predicted condition.

    For prediction ``p`` the real deltas of all candidate conditions are ranked by their distance
    to ``δ̂_p``; with ``rank`` the number of candidates strictly closer than the true ``δ_p`` plus
    half the number tied with it, the score is ``1 − rank / (N − 1)``. A perfect predictor scores
    1; a constant predictor averages exactly 0.5 over the conditions.

    Parameters
    ----------
    pred_deltas
        Predicted deltas to control, ``(m, n_genes)``.
    real_deltas
        Real deltas of the ``N`` candidate conditions, ``(N, n_genes)``.
    metric
        ``"cosine"``, ``"l1"`` or ``"l2"``.
    exclude_genes
        Gene indices (or a boolean mask) left out of the distance — pass all perturbation target
        genes, not only the condition's own, or a constant predictor scores above 0.5.
    true_index
        Row of ``real_deltas`` that is the truth for each prediction, shape ``(m,)``; defaults to
        ``arange(m)`` (requires ``m == N``).
    rtol
        Distances within ``rtol`` (relative to the largest distance) count as ties.

    Returns
    -------
    Scores in [0, 1], shape ``(m,)``; NaN when ``N < 2``.
    """
    pred = np.atleast_2d(_f64(pred_deltas))
    real = np.atleast_2d(_f64(real_deltas))
    n_cand = real.shape[0]
    true_index = np.arange(pred.shape[0]) if true_index is None else np.asarray(true_index)
    if true_index.shape[0] != pred.shape[0]:
        raise ValueError("true_index must have one entry per prediction row.")
    if n_cand < 2:
        return np.full(pred.shape[0], np.nan)
    keep = np.ones(real.shape[1], dtype=bool)
    if exclude_genes is not None:
        keep[np.asarray(exclude_genes)] = False
    d = pairwise_distances(pred[:, keep], real[:, keep], metric)
    d_true = d[np.arange(pred.shape[0]), true_index][:, None]
    finite = np.isfinite(d)
    tol = rtol * max(float(np.abs(d[finite]).max()) if finite.any() else 0.0, 1e-300)
    closer = (d < d_true - tol).sum(1)
    tied = (np.abs(d - d_true) <= tol).sum(1) - 1
    score = 1.0 - (closer + 0.5 * tied) / (n_cand - 1)
    return np.where(np.isfinite(d).all(1), score, np.nan)


def _to_torch(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def mean_pairwise_distance(x, y=None) -> float:
    """Mean Euclidean distance ``E‖x − y‖`` over all pairs of rows (``y = x`` if omitted).

    With ``y`` omitted the ``i = j`` pairs (distance 0) are included (a V-statistic).
    """
    xt = _to_torch(x)
    yt = xt if y is None else _to_torch(y)
    if xt.shape[0] == 0 or yt.shape[0] == 0:
        return float("nan")
    d = torch.cdist(xt, yt, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
    return float(d.mean())


def energy_distance(
    x, y, *, squared: bool = False, xx: float | None = None, yy: float | None = None
) -> float:
    """Energy distance between two sets of rows; Euclidean by default.

    ``squared=False`` (default): ``2 E‖x − y‖ − E‖x − x′‖ − E‖y − y′‖`` with Euclidean norms
    over all pairs of rows (including ``i = j``, a V-statistic), which is ≥ 0 and exactly 0 for
    identical sets. In 1-D it equals ``2 ∫ (F − G)²``, i.e. the square of
    ``scipy.stats.energy_distance``. This is the convention of pertpy ≥ 1.0
    (``pertpy.tools.Distance("edistance")``, Euclidean distances over all pairs).

    ``squared=True``: the E-distance of scPerturb (Peidli et al. 2024) with *squared* Euclidean
    distances and within-set means over distinct pairs (``i ≠ j``), computed in closed form as
    ``2‖x̄ − ȳ‖² − 2 s_x/(n_x − 1) − 2 s_y/(n_y − 1)`` with ``s = mean ‖x_i − x̄‖²``. It compares
    means only (corrected for sampling noise), can be slightly negative, and is on a squared
    scale: orders of magnitude apart from the Euclidean version.

    Parameters
    ----------
    x, y
        Samples, ``(n_x, d)`` and ``(n_y, d)`` (e.g. cells in PCA space).
    squared
        Use the squared-distance (E-distance) convention.
    xx, yy
        Optional precomputed within-set terms ``E‖x − x′‖`` and ``E‖y − y′‖`` (Euclidean only).

    Returns
    -------
    The energy distance (NaN if a set is empty, or has one row with ``squared=True``).
    """
    if squared:
        return energy_distance_sq(x, y)
    xx = mean_pairwise_distance(x) if xx is None else xx
    yy = mean_pairwise_distance(y) if yy is None else yy
    return max(2.0 * mean_pairwise_distance(x, y) - xx - yy, 0.0)


def _spread(x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Mean, mean squared deviation ``s`` and size of the rows of ``x``."""
    mu = x.mean(0)
    return mu, float(((x - mu) ** 2).sum(1).mean()), x.shape[0]


def energy_distance_sq(x, y) -> float:
    """E-distance with squared Euclidean distances (see :func:`energy_distance`)."""
    x, y = np.atleast_2d(_f64(x)), np.atleast_2d(_f64(y))
    if x.shape[0] < 2 or y.shape[0] < 2:
        return float("nan")
    (mx, sx, nx), (my, sy, ny) = _spread(x), _spread(y)
    return float(2.0 * ((mx - my) ** 2).sum() - 2.0 * sx / (nx - 1) - 2.0 * sy / (ny - 1))


#: Multiples of the median-heuristic bandwidth averaged by :func:`mmd`.
MMD_SCALES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)


def median_bandwidth(x, max_rows: int = 1000, seed: int = 0) -> float:
    """Median Euclidean distance between distinct rows of ``x`` (≤ ``max_rows`` rows, seeded).

    Returns 1.0 when it is zero or undefined (fewer than two rows).
    """
    x = np.atleast_2d(_f64(x))
    if x.shape[0] > max_rows:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False)]
    if x.shape[0] < 2:
        return 1.0
    d = torch.pdist(torch.from_numpy(x)).numpy()
    med = float(np.median(d))
    return med if med > _EPS else 1.0


def rbf_mean(d2: torch.Tensor, bandwidths) -> float:
    """Mean over entries and bandwidths σ of ``exp(−d² / (2σ²))`` for squared distances ``d2``."""
    total = 0.0
    for s in bandwidths:
        total += float(torch.exp(d2 * (-0.5 / float(s) ** 2)).mean())
    return total / len(bandwidths)


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d2.clamp_min_(0.0)


def mmd(x, y, *, bandwidths=None, scales=MMD_SCALES) -> float:
    """Biased (V-statistic) MMD² with Gaussian RBF kernels averaged over several bandwidths.

    ``MMD² = E k(x, x′) + E k(y, y′) − 2 E k(x, y)`` with ``k = mean_σ exp(−‖a − b‖² / 2σ²)``;
    ≥ 0, and 0 for identical sets.

    Parameters
    ----------
    x, y
        Samples, ``(n_x, d)`` and ``(n_y, d)``.
    bandwidths
        Kernel widths σ; default ``scales ×`` the median pairwise distance of the pooled rows.
    scales
        Multiples of the median heuristic used when ``bandwidths`` is None.

    Returns
    -------
    MMD² (NaN if a set is empty).
    """
    xt, yt = _to_torch(np.atleast_2d(x)), _to_torch(np.atleast_2d(y))
    if xt.shape[0] == 0 or yt.shape[0] == 0:
        return float("nan")
    if bandwidths is None:
        med = median_bandwidth(torch.cat([xt, yt]).numpy())
        bandwidths = [med * s for s in scales]
    kxx = rbf_mean(_sqdist(xt, xt), bandwidths)
    kyy = rbf_mean(_sqdist(yt, yt), bandwidths)
    kxy = rbf_mean(_sqdist(xt, yt), bandwidths)
    return max(kxx + kyy - 2.0 * kxy, 0.0)
