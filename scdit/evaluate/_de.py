"""Group statistics, a vectorised Welch t-test and top-k differential-expression gene selection."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def group_stats(
    X, codes: np.ndarray, n_groups: int, *, with_var: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-group cell counts, means and unbiased variances of the columns of ``X``.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix, cells × genes.
    codes
        Integer group code per cell, shape ``(n_cells,)``; negative codes are ignored.
    n_groups
        Number of groups (codes run from 0 to ``n_groups - 1``).
    with_var
        Also compute the per-group variance (``ddof=1``; 0 for groups with fewer than 2 cells).

    Returns
    -------
    ``(n, mean, var)`` with shapes ``(n_groups,)``, ``(n_groups, n_genes)`` and
    ``(n_groups, n_genes)`` (``var`` is ``None`` when ``with_var`` is False). float64.
    """
    codes = np.asarray(codes)
    keep = np.flatnonzero(codes >= 0)
    ind = sp.csr_matrix(
        (np.ones(keep.size), (codes[keep], keep)), shape=(n_groups, X.shape[0]), dtype=np.float64
    )
    n = np.asarray(ind.sum(axis=1)).ravel()
    denom = np.maximum(n, 1.0)[:, None]
    mean = _dense(ind @ X) / denom
    if not with_var:
        return n, mean, None
    sq = X.multiply(X) if sp.issparse(X) else np.square(np.asarray(X, dtype=np.float64))
    ss = _dense(ind @ sq) - n[:, None] * mean**2
    var = np.where(n[:, None] > 1, np.maximum(ss, 0.0) / np.maximum(n - 1, 1.0)[:, None], 0.0)
    return n, mean, var


def _dense(M) -> np.ndarray:
    return np.asarray(M.toarray() if sp.issparse(M) else M, dtype=np.float64)


def welch_t(
    mean_a: np.ndarray,
    var_a: np.ndarray,
    n_a: np.ndarray | float,
    mean_b: np.ndarray,
    var_b: np.ndarray,
    n_b: np.ndarray | float,
) -> np.ndarray:
    """Welch's t statistic ``(mean_a − mean_b) / sqrt(var_a/n_a + var_b/n_b)``, elementwise.

    Inputs broadcast (e.g. ``(n_groups, n_genes)`` against one control row). Where both
    variances are zero the statistic is ``±inf`` if the means differ and 0 if they are equal, so
    a gene with a clean, noise-free shift ranks first and a constant gene ranks last.

    Parameters
    ----------
    mean_a, var_a, n_a
        Mean, unbiased variance and number of cells of group a (``n_a`` broadcast per row:
        pass ``n[:, None]`` for batched groups).
    mean_b, var_b, n_b
        The same for group b (typically the control).

    Returns
    -------
    The t statistics, float64, broadcast shape of the inputs.
    """
    diff = np.asarray(mean_a, dtype=np.float64) - np.asarray(mean_b, dtype=np.float64)
    se2 = np.asarray(var_a, dtype=np.float64) / np.maximum(n_a, 1) + np.asarray(
        var_b, dtype=np.float64
    ) / np.maximum(n_b, 1)
    se = np.sqrt(np.maximum(se2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / se
    zero = se == 0
    return np.where(zero, np.where(diff == 0, 0.0, np.copysign(np.inf, diff)), t)


def welch_t_cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Welch's t statistic per column for two dense cell matrices ``a`` and ``b`` (cells × genes)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    var_a = a.var(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1])
    var_b = b.var(axis=0, ddof=1) if b.shape[0] > 1 else np.zeros(b.shape[1])
    return welch_t(a.mean(0), var_a, a.shape[0], b.mean(0), var_b, b.shape[0])


def top_k_de(t: np.ndarray, k: int, diff: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` genes with the largest ``|t|``, per row.

    Parameters
    ----------
    t
        t statistics, shape ``(n_genes,)`` or ``(n_groups, n_genes)``.
    k
        Number of genes (clipped to ``n_genes``).
    diff
        Optional mean differences (same shape) breaking ties in ``|t|`` by ``|diff|``; remaining
        ties go to the lower gene index.

    Returns
    -------
    Integer array of shape ``(k,)`` or ``(n_groups, k)``, ordered from most to least significant.
    """
    t = np.abs(np.nan_to_num(np.asarray(t, dtype=np.float64), nan=0.0))
    k = int(min(max(k, 0), t.shape[-1]))
    secondary = np.zeros_like(t) if diff is None else np.abs(np.asarray(diff, dtype=np.float64))
    if t.ndim == 1:
        return np.lexsort((-secondary, -t))[:k]
    out = np.empty((t.shape[0], k), dtype=np.int64)
    for i in range(t.shape[0]):
        out[i] = np.lexsort((-secondary[i], -t[i]))[:k]
    return out
