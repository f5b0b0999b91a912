"""Distribution metrics of ``evaluate`` (energy distance, E-distance, MMD) in a shared PCA."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from scipy.linalg import eigh
from scipy.sparse.linalg import LinearOperator, eigsh

from . import _metrics as M

#: Distribution metrics computed here, in the order ``evaluate`` reports them.
DIST_METRICS: tuple[str, ...] = ("energy_distance", "energy_distance_sq", "mmd")


def dense_rows(X, rows: np.ndarray) -> np.ndarray:
    """Rows of a dense or sparse matrix as a float64 array."""
    sub = X[rows]
    return np.asarray(sub.toarray() if hasattr(sub, "toarray") else sub, dtype=np.float64)


def subsample(rows: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``m`` of ``rows`` (sorted, seeded); all when ``m <= 0``."""
    if m <= 0 or len(rows) <= m:
        return rows
    return np.sort(rng.choice(rows, size=m, replace=False))


#: Largest side (genes, or cells when fewer) whose covariance or Gram matrix ``fit_pca``
#: eigen-decomposes exactly; beyond it the top components come from Lanczos iterations.
EXACT_PCA_MAX = 3000


def fit_pca(X: np.ndarray, n_pcs: int, seed: int | None = None, *,
            exact_max: int = EXACT_PCA_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(center, components (n_genes, k))`` of a PCA of the rows of ``X``.

    Deterministic: an exact eigen-decomposition of the genes × genes covariance, or of the
    cells × cells Gram matrix when there are fewer cells, when that side has at most
    ``exact_max`` entries; else Lanczos iterations (ARPACK ``eigsh`` on the implicit
    covariance, fixed start vector) converged to machine precision. A randomised SVD is not
    used: on the flat spectra of single-cell data it does not converge, and scores computed in
    its PCA would depend on its seed. Each component's sign makes its largest loading positive.

    Parameters
    ----------
    X
        Cells × genes, dense.
    n_pcs
        Components wanted (at most ``min(n_cells - 1, n_genes)`` are returned).
    seed
        Unused; accepted for compatibility (the PCA has no random part).
    exact_max
        Largest smaller side decomposed exactly (default :data:`EXACT_PCA_MAX`).
    """
    center = X.mean(0)
    Xc = X - center
    n, g = Xc.shape
    k = int(min(n_pcs, n - 1, g))
    if k < 1:
        return center, np.zeros((g, 0))
    if min(n, g) > exact_max and k < min(n, g) - 1:
        op = LinearOperator((g, g), matvec=lambda v: Xc.T @ (Xc @ v), dtype=np.float64)
        w, v = eigsh(op, k=k, which="LA", v0=np.ones(g) / np.sqrt(g))
        v = v[:, np.argsort(w)[::-1]]
    elif g <= n:
        v = eigh(Xc.T @ Xc, subset_by_index=[g - k, g - 1])[1][:, ::-1]
    else:
        w, u = eigh(Xc @ Xc.T, subset_by_index=[n - k, n - 1])
        v = (Xc.T @ u[:, ::-1]) / np.sqrt(np.maximum(w[::-1], 1e-300))
    top = np.abs(v).argmax(0)
    v = v * np.where(v[top, np.arange(v.shape[1])] < 0, -1.0, 1.0)
    return center, np.ascontiguousarray(v)


def few_threads(small: bool):
    """Single-threaded BLAS/OpenMP for small problems (threads only add overhead, and thrash on
    busy machines); a no-op for large ones or without threadpoolctl."""
    if not small:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)


class _Cells:
    """Cells in PCA space with their within-set terms (Euclidean mean, RBF mean, spread)."""

    def __init__(self, z: np.ndarray, bandwidths) -> None:
        self.z = torch.from_numpy(np.ascontiguousarray(z))
        self.n = z.shape[0]
        d = _cdist(self.z, self.z)
        self.e = float(d.mean()) if self.n else float("nan")
        self.k = M.rbf_mean(d * d, bandwidths) if self.n else float("nan")
        self.mu = z.mean(0) if self.n else np.full(z.shape[1], np.nan)
        self.s = float(((z - self.mu) ** 2).sum(1).mean()) if self.n else float("nan")


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")


def _panel(x: _Cells, y: _Cells, bandwidths, shift: np.ndarray | None = None) -> tuple:
    """``(energy, energy_sq, mmd)`` of ``x`` (optionally translated by ``shift``) against ``y``."""
    if x.n == 0 or y.n == 0:
        return (np.nan,) * 3
    xz = x.z if shift is None else x.z + torch.from_numpy(shift)
    d = _cdist(xz, y.z)
    energy = max(2.0 * float(d.mean()) - x.e - y.e, 0.0)
    mx = x.mu if shift is None else x.mu + shift
    if x.n > 1 and y.n > 1:
        esq = 2.0 * float(((mx - y.mu) ** 2).sum()) - 2 * x.s / (x.n - 1) - 2 * y.s / (y.n - 1)
    else:
        esq = np.nan
    mmd = max(x.k + y.k - 2.0 * M.rbf_mean(d * d, bandwidths), 0.0)
    return energy, esq, mmd


def distribution_scores(
    R,
    P,
    keys: list,
    control: str,
    shifts: dict,
    method_name: str,
    *,
    n_pcs: int,
    max_cells: int,
    seed: int,
    halves: dict | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """Energy distance, E-distance (squared) and MMD per group for every method.

    Cells are subsampled (≤ ``max_cells`` per group, seeded) and projected on an exact PCA
    (:func:`fit_pca`) fitted once on the real control and evaluated cells. A shift baseline is the control cells of the
    context plus its shift (so its within-set terms are the control's). MMD bandwidths are
    :data:`~scdit.evaluate._metrics.MMD_SCALES` × the median pairwise distance of the real cells
    of the context (control + evaluated), the same kernel for every method.

    Parameters
    ----------
    R, P
        Grouped real and predicted data (:class:`~scdit.evaluate.GroupedData`).
    keys
        Evaluated ``(condition, context)`` groups.
    control
        Control label.
    shifts
        Baseline name → list of shift vectors (gene space, None where not applicable).
    method_name
        Name of the prediction.
    n_pcs, max_cells, seed
        PCA size, cells per group and the seed of the subsampling (of groups above
        ``max_cells``, of the MMD bandwidth's cells, of the ceiling's halves).
    halves
        Optional ``key → (rows_a, rows_b)`` of ``R`` for the split-half ``ceiling``.

    Returns
    -------
    ``({method: {metric: values (len(keys),)}}, number of PCs used)``.
    """
    rng = np.random.default_rng(seed)
    ctxs = list(dict.fromkeys(k[1] for k in keys))
    ctrl_rows = {c: subsample(R.cells((control, c)), max_cells, rng) for c in ctxs}
    real_rows = {k: subsample(R.cells(k), max_cells, rng) for k in keys}
    pred_rows = {k: subsample(P.cells(k), max_cells, rng) for k in keys}
    n_fit = sum(map(len, ctrl_rows.values())) + sum(map(len, real_rows.values()))
    nan = {m: np.full(len(keys), np.nan) for m in DIST_METRICS}
    with few_threads(n_fit <= 20_000):
        ctrl_x = {c: dense_rows(R.X, r) for c, r in ctrl_rows.items()}
        real_x = {k: dense_rows(R.X, r) for k, r in real_rows.items()}
        fit = np.vstack(list(ctrl_x.values()) + list(real_x.values()))
        center, comps = fit_pca(fit, n_pcs)
        del fit

        def proj(A: np.ndarray) -> np.ndarray:
            return (A - center) @ comps

        ctrl_z = {c: proj(A) for c, A in ctrl_x.items()}
        real_z = {k: proj(A) for k, A in real_x.items()}
        bw = {}
        for c in ctxs:
            pooled = np.vstack([ctrl_z[c]] + [real_z[k] for k in keys if k[1] == c])
            med = M.median_bandwidth(pooled, seed=seed)
            bw[c] = [med * s for s in M.MMD_SCALES]
        ctrl = {c: _Cells(z, bw[c]) for c, z in ctrl_z.items()}
        real = {k: _Cells(z, bw[k[1]]) for k, z in real_z.items()}
        out = {name: {m: v.copy() for m, v in nan.items()} for name in [method_name, *shifts]}
        for i, k in enumerate(keys):
            x = _Cells(proj(dense_rows(P.X, pred_rows[k])), bw[k[1]])
            _put(out[method_name], i, _panel(x, real[k], bw[k[1]]))
            for kind, sh in shifts.items():
                if sh[i] is not None:
                    _put(out[kind], i, _panel(ctrl[k[1]], real[k], bw[k[1]], sh[i] @ comps))
        if halves is not None:
            out["ceiling"] = {m: v.copy() for m, v in nan.items()}
            for i, k in enumerate(keys):
                a, b = (subsample(h, max_cells, rng) for h in halves[k])
                if len(a) and len(b):
                    ca = _Cells(proj(dense_rows(R.X, a)), bw[k[1]])
                    cb = _Cells(proj(dense_rows(R.X, b)), bw[k[1]])
                    _put(out["ceiling"], i, _panel(ca, cb, bw[k[1]]))
    return out, int(comps.shape[1])


def _put(store: dict, i: int, values: tuple) -> None:
    for m, v in zip(DIST_METRICS, values, strict=True):
        store[m][i] = v
