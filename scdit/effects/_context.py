"""The effect of a perturbation in a covariate context where it was never seen.

Given the perturbation's effects ``E[k] = mean(perturbed) − mean(control)`` in ``K`` training
contexts, their control means ``C[k]`` and the control mean ``c`` of the new context, estimate the
new context's effect. Three families of estimators, each a simple function of the training
contexts, are compared by leave-one-context-out (LOCO) prediction of the training contexts'
own effects, and the best one (highest mean Pearson correlation) is used:

* ``mean``: the average effect (the *mean-shift* baseline);
* ``kernel``: an average weighted by how close each context's control mean is to ``c``
  (``exp(−d²/τ)`` on whitened principal-component coordinates of the control cells), for a grid
  of bandwidths ``τ``: similar contexts respond alike (e.g. monocyte types under interferon);
* ``slope``: ``mean(E) + b (c − mean(C))`` for a grid of ``b``: a context whose baseline sits
  above the others moves less (``b < 0``; ``b = −1`` predicts the same treated state for every
  context, ``b = 0`` is the mean shift).

The held-out-context benchmarks (Kang 2018 cell types, glioblastoma patients; docs/results.md)
compare the LOCO-chosen estimator with the mean shift.
"""

from __future__ import annotations

import numpy as np

#: Candidate bandwidths of the kernel (squared distances of whitened PC coordinates).
TAUS = (1000.0, 300.0, 100.0, 30.0, 10.0, 3.0)
#: Candidate slopes.
SLOPES = tuple(round(float(b), 1) for b in np.arange(-1.0, 0.31, 0.1))
#: Whitened principal components used for the kernel's distances.
N_PCS = 20

def pc_basis(cells: np.ndarray, n_pcs: int = N_PCS) -> tuple[np.ndarray, np.ndarray]:
    """``(centre (D,), projection (D, k))`` mapping a point to its whitened principal-component
    coordinates, components fitted on ``cells`` ``(n, D)`` (unit variance per component over
    the cells). The SVD is the costly part of :func:`context_effect`; a caller predicting
    several times from the same training contexts can compute this once."""
    cells = np.asarray(cells, dtype=np.float64)
    mu = cells.mean(0)
    _, s, vt = np.linalg.svd(cells - mu, full_matrices=False)
    keep = s > s[0] * 1e-8 if len(s) else np.zeros(0, bool)
    k = int(min(n_pcs, keep.sum()))
    sd = s[:k] / np.sqrt(max(len(cells), 1))
    return mu, vt[:k].T / sd


def pc_coordinates(cells: np.ndarray, means: np.ndarray, n_pcs: int = N_PCS) -> np.ndarray:
    """Whitened principal-component coordinates of ``means`` ``(m, D)``, with components fitted
    on ``cells`` ``(n, D)`` (unit variance per component over the cells)."""
    mu, proj = pc_basis(cells, n_pcs)
    return (np.asarray(means, dtype=np.float64) - mu) @ proj


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else 0.0


def _linear_form(kind: str, param: float | None, P: np.ndarray,
                 p: np.ndarray) -> tuple[np.ndarray, float]:
    """Every estimator is ``w @ E + b (c − mean(C))``: its weights ``w`` ``(K,)`` and ``b``."""
    K = len(P)
    if kind == "mean":
        return np.full(K, 1.0 / K), 0.0
    if kind == "kernel":
        d2 = ((P - p) ** 2).sum(1)
        w = np.exp(-(d2 - d2.min()) / param)
        return w / w.sum(), 0.0
    if kind == "slope":
        return np.full(K, 1.0 / K), float(param)
    raise ValueError(f"unknown estimator {kind!r}")


def apply_effect(info: dict, E: np.ndarray, C: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The estimator chosen by :func:`context_effect` (``info``) applied to other features of
    the same contexts, e.g. genes outside the model: ``weights @ E + slope (c − mean(C))``."""
    E, C = np.asarray(E, dtype=np.float64), np.asarray(C, dtype=np.float64)
    return np.asarray(info["weights"]) @ E + info["slope"] * (np.asarray(c, np.float64) - C.mean(0))


def _estimate(kind: str, param: float | None, E: np.ndarray, C: np.ndarray, P: np.ndarray,
              c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One estimator's effect for a context with control mean ``c`` and coordinates ``p``."""
    w, b = _linear_form(kind, param, P, p)
    return apply_effect({"weights": w, "slope": b}, E, C, c)


def candidates() -> list[tuple[str, float | None]]:
    """All (family, parameter) pairs compared by :func:`context_effect`."""
    return ([("mean", None)] + [("kernel", t) for t in TAUS] + [("slope", b) for b in SLOPES])


def loco_scores(E: np.ndarray, C: np.ndarray, P: np.ndarray) -> dict[tuple[str, float | None], float]:
    """Mean Pearson correlation of each candidate's prediction of every training context's
    effect from the other training contexts (needs ``K ≥ 3``)."""
    K = len(E)
    if K < 3:
        raise ValueError(f"leave-one-context-out needs at least 3 training contexts, got {K}.")
    out = {}
    for kind, param in candidates():
        scores = []
        for k in range(K):
            rest = np.arange(K) != k
            est = _estimate(kind, param, E[rest], C[rest], P[rest], C[k], P[k])
            scores.append(_pearson(est, E[k]))
        out[(kind, param)] = float(np.mean(scores))
    return out


def context_effect(E: np.ndarray, C: np.ndarray, c: np.ndarray,
                   control_cells: np.ndarray | None = None, *,
                   basis: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """Effect of a perturbation in a new context (see the module docstring).

    Parameters
    ----------
    E, C
        ``(K, D)`` effects and control means of the perturbation's ``K ≥ 2`` training contexts.
    c
        ``(D,)`` control mean of the new context.
    control_cells
        ``(n, D)`` control cells (all contexts) the kernel's principal components are fitted on.
    basis
        Or their :func:`pc_basis`, computed beforehand.

    Returns
    -------
    ``(effect (D,), info)``; ``info`` has ``method``, ``param``, ``loco`` (the chosen
    candidate's LOCO score, ``None`` with ``K < 3``), ``loco_mean`` (the mean shift's), and
    ``weights`` ``(K,)`` and ``slope``: the estimate is ``weights @ E + slope (c − mean(C))``
    (:func:`apply_effect`). With ``K = 2`` the mean shift is returned (no LOCO possible).
    """
    E, C = np.asarray(E, dtype=np.float64), np.asarray(C, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if len(E) < 2:
        raise ValueError(f"a context effect needs the perturbation in ≥ 2 training contexts, "
                         f"got {len(E)}.")
    if len(E) < 3:
        info = {"method": "mean", "param": None, "loco": None, "loco_mean": None,
                "weights": np.full(len(E), 1.0 / len(E)), "slope": 0.0}
        return apply_effect(info, E, C, c), info
    if basis is None:
        if control_cells is None:
            raise ValueError("context_effect needs control_cells or their basis.")
        basis = pc_basis(control_cells)
    coords = (np.vstack([C, c[None]]) - basis[0]) @ basis[1]
    P, p = coords[:-1], coords[-1]
    scores = loco_scores(E, C, P)
    best = max(scores, key=lambda key: (scores[key], key == ("mean", None)))
    w, b = _linear_form(best[0], best[1], P, p)
    info = {"method": best[0], "param": best[1], "loco": scores[best],
            "loco_mean": scores[("mean", None)], "weights": w, "slope": b}
    return apply_effect(info, E, C, c), info


#: Rank of the expression basis a held-out context's estimated effect is projected onto
#: (:func:`expression_basis`; scanpy's and CellFlow's default number of components).
EFFECT_RANK = 50
#: Most training cells the basis is fitted on (a seeded random subsample beyond this).
BASIS_CELLS = 3000


def expression_basis(X, rank: int = EFFECT_RANK, *, max_cells: int = BASIS_CELLS,
                     seed: int = 0, exact_below: int = 2000) -> np.ndarray | None:
    """Orthonormal top principal axes ``(G, k)`` of log1p expression ``X`` ``(n, G)``.

    An effect estimated gene by gene from a few contexts carries each gene's sampling noise;
    real responses move genes together along the main axes of expression variation. Projecting
    the estimate onto the top ``rank`` axes of the training cells (:func:`project_effect`)
    keeps the coordinated part and drops most of the per-gene noise, as a PCA representation
    (e.g. CellFlow's) does implicitly. ``None`` when there are too few cells or genes for the
    projection to change anything (``rank ≥ min(n − 1, G)``).

    Parameters
    ----------
    X
        log1p expression, dense or sparse, cells × genes.
    rank
        Axes kept.
    max_cells
        Cells used at most (seeded subsample).
    seed
        Seed of the subsample and of the randomised SVD.
    exact_below
        An exact SVD when the (subsampled) matrix has at most this many rows or columns (e.g.
        1,619 Kang cells: ~2 s); otherwise a randomised SVD (Halko et al. 2011; oversampling
        ``rank`` and six power iterations), in float32 to halve its memory.
    """
    n, g = X.shape
    if rank >= min(n - 1, g):
        return None
    rng = np.random.default_rng(seed)
    if n > max_cells:
        X = X[np.sort(rng.choice(n, max_cells, replace=False))]
    q = 2 * rank
    small = min(X.shape) <= max(exact_below, 2 * q)
    # float32 for the (up to max_cells × G) matrix of a randomised SVD: 4 bytes per value
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X,
                   dtype=np.float64 if small else np.float32)
    X = X - X.mean(0)
    if small:
        return np.linalg.svd(X, full_matrices=False)[2][:rank].T
    omega = rng.standard_normal((X.shape[0], q)).astype(np.float32)
    Q = np.linalg.qr(X.T @ omega)[0]  # (G, q)
    for _ in range(6):
        Q = np.linalg.qr(X.T @ np.linalg.qr(X @ Q)[0])[0]
    _, _, vt = np.linalg.svd(X @ Q, full_matrices=False)
    return np.linalg.qr((Q @ vt[:rank].T).astype(np.float64))[0]  # orthonormal in float64


def project_effect(delta: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """``delta`` ``(G,)`` projected onto the span of ``basis`` ``(G, k)`` (unchanged for
    ``None``)."""
    if basis is None:
        return np.asarray(delta, dtype=np.float64)
    return basis @ (basis.T @ np.asarray(delta, dtype=np.float64))
