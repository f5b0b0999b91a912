"""Detect and convert between expression representations (raw counts vs log1p-normalised)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from ._rounding import matched_round_up, systematic_round_up

Representation = Literal["counts", "log1p"]

#: Target sum used for ``normalize_total`` before ``log1p`` throughout scdit.
TARGET_SUM: float = 1e4


def _values(X) -> np.ndarray:
    """Return the stored (non-implicit-zero) values of a dense or sparse matrix, flattened."""
    if sp.issparse(X):
        return np.asarray(X.data)
    return np.asarray(X).ravel()


def detect_representation(X, *, max_values: int = 1_000_000) -> Representation:
    """Guess whether ``X`` holds raw counts or log1p-normalised expression.

    Counts are non-negative integers; anything non-integer is taken as log1p (or otherwise
    normalised) expression.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix, cells × genes.
    max_values
        At most this many stored values are inspected (a deterministic stride subsample).

    Returns
    -------
    ``"counts"`` or ``"log1p"``.
    """
    vals = _values(X)
    if vals.size > max_values:
        vals = vals[:: int(np.ceil(vals.size / max_values))]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "log1p"
    if np.all(np.abs(vals - np.round(vals)) < 1e-6) and vals.min() >= 0:
        return "counts"
    return "log1p"


def library_size(X) -> np.ndarray:
    """Total counts per cell, shape ``(n_cells,)`` (float64)."""
    return np.asarray(X.sum(axis=1), dtype=np.float64).ravel()


def counts_to_log1p(X, *, target_sum: float = TARGET_SUM, lib: np.ndarray | None = None):
    """``log1p(X / lib * target_sum)`` keeping sparsity; ``lib`` defaults to each cell's total.

    Cells with a zero library stay zero. Returns float32 CSR for sparse input, ndarray otherwise.
    """
    lib = library_size(X) if lib is None else np.asarray(lib, dtype=np.float64)
    scale = np.divide(target_sum, lib, out=np.zeros_like(lib), where=lib > 0)
    if sp.issparse(X):
        out = sp.csr_matrix(sp.diags(scale) @ X, dtype=np.float32)
        np.log1p(out.data, out=out.data)
        return out
    return np.log1p(np.asarray(X, dtype=np.float64) * scale[:, None]).astype(np.float32)


def renormalise_log1p(X: np.ndarray, *, target_sum: float = TARGET_SUM,
                      columns: np.ndarray | None = None) -> np.ndarray:
    """Rescale each row of log1p-normalised values so its ``expm1`` sums to ``target_sum``.

    ``log1p(expm1(x) * s)`` per row, with values clipped at 0 first and ``s`` the factor that
    brings the row's ``expm1`` total to ``target_sum``. Every cell of :func:`counts_to_log1p`
    satisfies this over all its genes, whatever its depth, so generated cells of a counts
    model that do not (a generator's overall expression level drifts where no estimate sets
    its mean) are projected back onto what a counts evaluation, which normalises each cell by
    its total, would make of them.

    Parameters
    ----------
    X
        Dense log1p values ``(n, G)``: all the genes of each row.
    target_sum
        The normalisation's total (``1e4``).
    columns
        Indices of the columns to rescale (e.g. the generated genes); the others are kept as
        they are and count towards the total. A row whose kept columns already reach
        ``target_sum``, or whose rescaled columns are all 0, is left unchanged (clipped).
        ``None``: all columns.

    Returns
    -------
    Float32 array of ``X``'s shape.
    """
    e = np.expm1(np.clip(np.asarray(X, dtype=np.float64), 0.0, None))
    cols = np.arange(e.shape[1]) if columns is None else np.asarray(columns, dtype=np.intp)
    part = e[:, cols].sum(1, keepdims=True)
    rest = target_sum - (e.sum(1, keepdims=True) - part)
    ok = (part > 0) & (rest > 0)
    e[:, cols] *= np.divide(rest, part, out=np.ones_like(part), where=ok)
    return np.log1p(e).astype(np.float32)


def to_log1p(X, representation: Representation | None = None, *, target_sum: float = TARGET_SUM):
    """Return ``X`` as log1p-normalised expression (normalising counts; log1p input unchanged)."""
    representation = representation or detect_representation(X)
    if representation == "counts":
        return counts_to_log1p(X, target_sum=target_sum)
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    return np.asarray(X, dtype=np.float32)


def log1p_to_counts(
    X: np.ndarray,
    lib: np.ndarray,
    *,
    target_sum: float = TARGET_SUM,
    rng: np.random.Generator | None = None,
    unbiased: str = "log1p",
    rounding: str = "independent",
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Invert :func:`counts_to_log1p` for given library sizes, returning non-negative integers.

    Each value is rounded stochastically to one of the two neighbouring counts ``k`` and
    ``k + 1`` (``k = floor(expm1(X) * lib / target_sum)``); exact inverses of
    :func:`counts_to_log1p` come back unchanged.

    ``unbiased="log1p"`` (default) draws ``k + 1`` with the probability that keeps the expected
    *log1p-normalised* value equal to ``X``: the space the generator was trained in. At low
    depth the count levels are far apart in that space (one UMI at a library of 200 is
    ``log1p(50) = 3.9``), and rounding in count space would map a generated value between two
    levels to a much lower expected log1p value (measured on the held-out glioblastoma
    patients benchmark: a lower energy distance). ``unbiased="counts"`` keeps the expected *count* equal
    to ``expm1(X) * lib / target_sum`` instead.

    ``rounding="independent"`` (default) rounds every value with its own uniform draw.
    ``"systematic"`` rounds each column (gene) of the matrix by systematic sampling over its
    rows in a random order: every value still rounds up with exactly the same probability, but
    the number of rows rounded up in a column is the sum of those probabilities rounded up or
    down, so a column's mean over the rows carries almost no rounding noise (the counts
    analogue of :attr:`scdit.SamplingConfig.center_noise`). Rows of one column become slightly
    negatively correlated in their rounding; each row alone is unchanged in distribution.
    ``"matched"`` (log1p-unbiased only) chooses the number of round-ups of each column within
    each of ``groups`` (rows' group labels; ``None``: one group) so that the column's mean of
    the *renormalised* values, ``log1p(counts / row total * target_sum)``, equals its mean of
    ``X`` (:func:`scdit.data.matched_round_up`): what a counts evaluation computes, since it
    normalises every cell by its total. ``X`` must then hold all the columns of its rows.

    Values within a relative 1e-6 of a count are taken as that count (float32 inputs).
    """
    if unbiased not in ("log1p", "counts"):
        raise ValueError(f"unbiased must be 'log1p' or 'counts', got {unbiased!r}.")
    if rounding not in ("independent", "systematic", "matched"):
        raise ValueError("rounding must be 'independent', 'systematic' or 'matched', got "
                         f"{rounding!r}.")
    if rounding == "matched" and unbiased != "log1p":
        raise ValueError("rounding='matched' matches log1p-normalised means: it needs "
                         f"unbiased='log1p', got {unbiased!r}.")
    rng = rng or np.random.default_rng(0)
    x = np.clip(np.asarray(X, dtype=np.float64), 0.0, None)
    if rounding == "matched" and x.ndim != 2:
        raise ValueError("rounding='matched' needs a 2-D matrix (cells × genes), got shape "
                         f"{x.shape}.")
    scale = np.asarray(lib, dtype=np.float64)[:, None] / target_sum  # (n, 1)
    mu = np.expm1(x) * scale
    near = np.round(mu)
    exact = np.abs(mu - near) <= 1e-6 * np.maximum(near, 1.0)
    mu = np.where(exact, near, mu)
    k = np.floor(mu)
    if unbiased == "counts":
        p = mu - k
    else:
        inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
        lo, hi = np.log1p(k * inv), np.log1p((k + 1) * inv)
        p = np.divide(x - lo, hi - lo, out=np.zeros_like(x), where=hi > lo)
    p = np.where(exact, 0.0, np.clip(p, 0.0, 1.0))
    if rounding == "matched":
        return (k + matched_round_up(x, k, p, groups, rng, target_sum=target_sum)
                ).astype(np.float32)
    if rounding == "systematic" and p.ndim == 2 and p.shape[0] > 1:
        return (k + systematic_round_up(p, rng)).astype(np.float32)
    return (k + (rng.random(mu.shape) < p)).astype(np.float32)


def clipped_mean_shift(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per column, the constant ``s`` with ``mean(max(values + s, 0)) == max(target, 0)``.

    ``values`` ``(n, G)`` are unclipped log1p values, ``target`` ``(G,)`` the wanted mean after
    clipping at 0 (a negative target is clipped to 0: the shift ``-max(values)`` that zeroes
    the column). Used where a mean is imposed on log1p output (anchoring): a plain shift
    followed by clipping would raise the mean of lowly expressed genes.

    Solved exactly: the clipped mean is piecewise linear in ``s``, with a kink where a value
    crosses 0. With a column sorted in decreasing order ``u_1 ≥ … ≥ u_n`` and the ``k`` largest
    values positive, ``mean = (u_1 + … + u_k + k s) / n``. The clipped mean at the kink
    ``s = -u_{k+1}`` is ``(C_k - k u_{k+1}) / n`` (``C_k = u_1 + … + u_k``), non-decreasing in
    ``k``, so the number of kinks below the target gives ``k``; ``s`` is then clipped into
    that piece, ``[-u_k, -u_{k+1}]`` (one sort per column rather than an iterative search).
    Columns holding NaN give NaN.
    """
    u = np.asarray(values, dtype=np.float64)
    target = np.maximum(np.asarray(target, dtype=np.float64), 0.0)
    n, g = u.shape
    if n == 0:
        return np.zeros(g)
    desc = np.sort(u, axis=0)[::-1]  # (n, G) each column in decreasing order (NaN first)
    csum = np.cumsum(desc, axis=0)  # (n, G) C_k
    goal = n * target  # (G,)
    kinks = csum[:-1] - np.arange(1, n, dtype=np.float64)[:, None] * desc[1:]  # (n-1, G)
    below = np.minimum((kinks < goal).sum(0), n - 1)  # (G,) index k - 1 of the piece
    cols = np.arange(g)
    shift = (goal - csum[below, cols]) / (below + 1.0)
    upper = np.where(below + 1 < n, -desc[np.minimum(below + 1, n - 1), cols], np.inf)
    shift = np.clip(shift, -desc[below, cols], upper)
    out = np.where(target > 0, shift, -desc[0])
    return np.where(np.isnan(u).any(0), np.nan, out)


#: Bisection steps of :func:`mean_fold_change` on ``log r`` (its bracket is halved each step).
FOLD_STEPS = 50
#: Largest factor :func:`mean_fold_change` gives (smallest: ``exp(-30)``); a column that would
#: need more (the rise of its mean falls on a few expressing values, which would become
#: outliers) gives NaN.
FOLD_MAX = 1000.0
#: Most values (rows × columns, float64) :func:`mean_fold_change` works on at a time.
FOLD_VALUES = 2**21


def mean_fold_change(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per column, the factor ``r ≥ 0`` with ``mean(log1p(r · expm1(values))) == target``.

    ``values`` ``(n, G)`` are log1p values (non-negative), ``target`` ``(G,)`` the wanted mean.
    Scaling each cell's expression of a gene by one factor is how a change of its mean is
    imposed on *real* cells (a typical perturbation applied to control cells, the user
    guide's stand-ins): zeros stay zeros, well-expressed values move by about ``log r`` (the
    same as a shift in log1p) and lowly expressed ones by less, where a shift followed by a
    clip at 0 (:func:`clipped_mean_shift`) would turn zeros into small positive values and
    narrow the distribution. The mean is increasing in ``r``; it is found by bisection on
    ``log r`` (:data:`FOLD_STEPS` steps in ``[-30, log FOLD_MAX]``), a block of columns at a
    time (at most :data:`FOLD_VALUES` values).

    A target of 0 or below gives 0 (every value to 0). NaN, for the caller to shift instead
    (:func:`clipped_mean_shift`): a column that no factor up to :data:`FOLD_MAX` brings to its
    target (e.g. no positive value, or a few small ones that would have to carry the whole
    mean), and a column holding NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if np.any(v < 0):
        raise ValueError("mean_fold_change needs non-negative log1p values; clip them at 0.")
    n, g = v.shape
    if n == 0:  # nothing to scale: only a zero target is reached
        return np.where(target > 0, np.nan, 0.0)
    out = np.empty(g)
    width = max(1, FOLD_VALUES // max(n, 1))
    for a in range(0, g, width):
        e, t = np.expm1(v[:, a:a + width]), target[a:a + width]
        lo, hi = np.full(e.shape[1], -30.0), np.full(e.shape[1], np.log(FOLD_MAX))
        reach = np.log1p(FOLD_MAX * e).mean(0) >= t  # the target is within the largest factor
        for _ in range(FOLD_STEPS):
            mid = (lo + hi) / 2
            low = np.log1p(np.exp(mid) * e).mean(0) < t
            lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
        r = np.where(t > 0, np.exp((lo + hi) / 2), 0.0)
        out[a:a + width] = np.where((t > 0) & ~reach, np.nan, r)
    return np.where(np.isnan(v).any(0), np.nan, out)


def mean_fold_or_shift(values: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, ``(factor, shift)`` with ``mean(max(log1p(factor · expm1(values)) + shift,
    0)) == max(target, 0)``: the factor of :func:`mean_fold_change` and no shift where it
    exists, else factor 1 and the shift of :func:`clipped_mean_shift` (a column no factor up
    to :data:`FOLD_MAX` reaches, e.g. one with no positive value)."""
    v = np.asarray(values, dtype=np.float64)
    factor = mean_fold_change(v, target)
    lift = np.isnan(factor)
    shift = np.zeros(v.shape[1])
    shift[lift] = clipped_mean_shift(v[:, lift], np.asarray(target, dtype=np.float64)[lift])
    return np.where(lift, 1.0, factor), shift
