"""How generated log1p values round to neighbouring counts: systematic and mean-matched.

Both choose, per value, between the two counts ``k`` and ``k + 1`` around it (see
:func:`scdit.data.log1p_to_counts`), given the probability ``p`` of ``k + 1`` that keeps the
expected log1p-normalised value.
"""

from __future__ import annotations

import numpy as np

#: Passes of :func:`matched_round_up` (each re-reads the rows' totals after the last choice).
MATCH_PASSES = 4


def systematic_round_up(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Booleans ``(n, G)`` with ``P(up[i, g]) = p[i, g]`` whose column sums are ``floor`` or
    ``ceil`` of ``p.sum(0)``: systematic sampling over the rows of each column in a random
    order (one uniform offset per column).

    Row ``i`` of column ``g`` (at position ``j`` of the order) rounds up when the interval
    ``[c_{j-1}, c_j)`` of the cumulative probabilities contains a point ``u_g + m`` (integer
    ``m``, ``u_g`` uniform on [0, 1)): exactly the probability ``p[i, g]`` for ``p ≤ 1``.
    """
    n, g = p.shape
    order = np.argsort(rng.random((n, g)), axis=0)  # a random order of the rows per column
    c = np.cumsum(np.take_along_axis(p, order, axis=0), axis=0)
    u = rng.random(g)
    f = np.floor(c - u)
    prev = np.vstack([np.floor(-u)[None, :], f[:-1]])
    up = np.empty((n, g), dtype=bool)
    np.put_along_axis(up, order, f > prev, axis=0)
    return up


def matched_round_up(x: np.ndarray, k: np.ndarray, p: np.ndarray, groups: np.ndarray | None,
                     rng: np.random.Generator, *, target_sum: float,
                     passes: int = MATCH_PASSES) -> np.ndarray:
    """Booleans ``(n, G)``: which values of ``x`` round up to ``k + 1`` so that, within each
    group of rows, every column's mean of the *renormalised* log1p values
    ``log1p(counts / row total * target_sum)`` equals its mean of ``x``.

    The order in which a column's values round up is that of independent rounding
    (``p - u`` for a uniform ``u`` per value; values exactly at a count level, ``p = 0``,
    never round up), so a column that needs as many round-ups as independent rounding drew
    gets exactly its draw. Only the number of round-ups per column is chosen: the one whose
    mean brackets the target from below and the next, drawn with the probability that makes
    the expected mean the target (for a single row this is stochastic rounding of the
    renormalised value). A row's total depends on all its columns, so the choice is repeated
    ``passes`` times with the totals of the previous pass. Every value stays one of its two
    neighbouring counts, so a target out of reach (cells whose ``expm1`` sums are far from
    ``target_sum``) is only approached: the column's values then all round the same way.

    Why: a counts evaluation normalises each cell by its total, and generated log1p cells do
    not sum to ``target_sum`` in ``expm1``. Rounding each value without bias still moves every
    column's normalised mean (most for genes of low depth), so a label's counts would lose
    the mean its log1p cells have.

    Parameters
    ----------
    x
        Log1p values ``(n, G)``, clipped at 0: all the columns of the rows (a row's total is
        the sum of its counts).
    k, p
        Lower count ``(n, G)`` and the probability of ``k + 1``.
    groups
        Group of each row ``(n,)`` (e.g. its context); ``None``: one group.
    rng
        Random stream (the per-value order, then one uniform per group and column).
    target_sum
        The normalisation's total (``1e4``).
    passes
        Passes over the rows' totals.
    """
    n, g = x.shape
    up = np.zeros((n, g), dtype=bool)
    if n == 0 or g == 0:
        return up
    s = np.where(p > 0, p - rng.random((n, g)), -np.inf)  # priority of rounding up
    codes = np.zeros(n, dtype=np.int64) if groups is None else \
        np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    v = rng.random((int(codes.max()) + 1, g))
    for c in range(v.shape[0]):
        rows = np.flatnonzero(codes == c)
        up[rows] = _match_group(x[rows], k[rows], s[rows], v[c], target_sum, passes)
    return up


def _match_group(x: np.ndarray, k: np.ndarray, s: np.ndarray, v: np.ndarray,
                 target_sum: float, passes: int) -> np.ndarray:
    """:func:`matched_round_up` for the rows of one group (``v``: one uniform per column)."""
    n, g = x.shape
    target = x.mean(0)
    order = np.argsort(-s, axis=0, kind="stable")  # (n, G) rows, most eligible first
    rank = np.empty((n, g), dtype=np.int64)
    np.put_along_axis(rank, order, np.arange(n)[:, None], axis=0)
    eligible = np.isfinite(s)
    n_eligible = eligible.sum(0)
    ok = np.take_along_axis(eligible, order, axis=0)
    up = s > 0  # independent rounding: the first pass's totals
    cols = np.arange(g)
    for _ in range(max(1, int(passes))):
        total = (k + up).sum(1, keepdims=True)
        f = np.divide(target_sum, total, out=np.zeros_like(total, dtype=np.float64),
                      where=total > 0)
        low = np.log1p(k * f)
        step = np.where(ok, np.take_along_axis(np.log1p((k + 1) * f) - low, order, axis=0), 0)
        means = np.vstack([np.zeros((1, g)), np.cumsum(step, axis=0)]) / n + low.mean(0)
        below = np.clip((means <= target).sum(0) - 1, 0, n_eligible)  # (G,) last mean ≤ target
        above = np.minimum(below + 1, n_eligible)
        gap = means[above, cols] - means[below, cols]
        frac = np.divide(target - means[below, cols], gap, out=np.zeros(g), where=gap > 0)
        m = below + (v < np.clip(frac, 0.0, 1.0))
        up = (rank < m[None, :]) & eligible
    return up
