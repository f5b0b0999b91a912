"""Mean-matched rounding of log1p values to counts (``log1p_to_counts(rounding="matched")``)."""

from __future__ import annotations

import numpy as np
import pytest

from scdit.data import counts_to_log1p, library_size, log1p_to_counts


def _renormalised(counts: np.ndarray) -> np.ndarray:
    """What a counts evaluation computes: log1p of each cell normalised by its own total."""
    return np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)


def _generated(n: int = 300, g: int = 40, seed: int = 0, jitter: float = 0.25):
    """Low-depth counts as log1p, moved by noise so they sit between count levels and their
    ``expm1`` sums are no longer 10^4 (as generated cells are), with the libraries."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.6, 1.0, g) * 8
    counts = rng.poisson(rate, (n, g)).astype(np.float64)
    counts[counts.sum(1) == 0, 0] = 1
    lib = library_size(counts)
    x = np.asarray(counts_to_log1p(counts), dtype=np.float64)
    x = np.maximum(x + rng.normal(0, jitter, x.shape) * (x > 0), 0.0)
    return x, lib


def test_matched_rounding_keeps_the_renormalised_means():
    """Per column, the renormalised counts' mean is the mean of the log1p values, far closer
    than with systematic rounding (which keeps each value's expectation but not the mean after
    each cell is normalised by its total)."""
    x, lib = _generated()
    matched = log1p_to_counts(x, lib, rng=np.random.default_rng(1), rounding="matched")
    systematic = log1p_to_counts(x, lib, rng=np.random.default_rng(1), rounding="systematic")
    assert np.array_equal(matched, np.round(matched)) and matched.min() >= 0
    err_m = np.abs(_renormalised(matched).mean(0) - x.mean(0))
    err_s = np.abs(_renormalised(systematic).mean(0) - x.mean(0))
    # one count of a cell at a depth of ~170 moves a column's mean by up to log1p(60) / n;
    # the columns of many counts per cell are out of reach of one count per value
    assert np.median(err_m) < 0.005 < np.median(err_s)
    assert err_m.mean() < 0.4 * err_s.mean()
    # each value is still one of its two neighbouring counts
    k = np.floor(np.expm1(x) * lib[:, None] / 1e4 + 1e-9)
    assert np.all((matched == k) | (matched == k + 1))


def test_matched_rounding_matches_each_group():
    """Two groups of rows with different expression: each group's means are matched."""
    a, lib_a = _generated(seed=2)
    b, lib_b = _generated(seed=3)
    x, lib = np.vstack([a, b]), np.concatenate([lib_a, lib_b])
    groups = np.array(["a"] * len(a) + ["b"] * len(b))
    out = log1p_to_counts(x, lib, rng=np.random.default_rng(4), rounding="matched",
                          groups=groups)
    pooled = log1p_to_counts(x, lib, rng=np.random.default_rng(4), rounding="matched")
    for g in ("a", "b"):
        r = groups == g
        err = np.abs(_renormalised(out[r]).mean(0) - x[r].mean(0))
        err_pooled = np.abs(_renormalised(pooled[r]).mean(0) - x[r].mean(0))
        assert np.median(err) < 0.01
        assert err.mean() < 0.6 * err_pooled.mean()  # one pooled group does not match each


def test_matched_rounding_edge_cases():
    x, lib = _generated(n=50, g=10, seed=5)
    # exact inverses come back unchanged (nothing lies between two levels)
    counts = np.random.default_rng(6).poisson(3.0, (50, 10)).astype(np.float64)
    counts[counts.sum(1) == 0, 0] = 1
    back = log1p_to_counts(counts_to_log1p(counts).astype(np.float32), library_size(counts),
                           rng=np.random.default_rng(0), rounding="matched")
    np.testing.assert_array_equal(back, counts)
    # a single valid row (expm1 sum 10^4): stochastic rounding, unbiased for its renormalised
    # values on average
    x[0] = np.log1p(np.expm1(x[0]) * 1e4 / np.expm1(x[0]).sum())
    one = np.stack([log1p_to_counts(x[:1], lib[:1], rng=np.random.default_rng(s),
                                    rounding="matched") for s in range(3000)])[:, 0]
    assert len({tuple(r) for r in one}) > 1
    np.testing.assert_allclose(_renormalised(one).mean(0), x[0], atol=0.05)
    # the same seed gives the same counts
    np.testing.assert_array_equal(
        log1p_to_counts(x, lib, rng=np.random.default_rng(7), rounding="matched"),
        log1p_to_counts(x, lib, rng=np.random.default_rng(7), rounding="matched"))
    with pytest.raises(ValueError, match="unbiased='log1p'"):
        log1p_to_counts(x, lib, rounding="matched", unbiased="counts")
    with pytest.raises(ValueError, match="2-D"):
        log1p_to_counts(x[0], lib[:1], rounding="matched")


def test_matched_rounding_out_of_reach():
    """Cells whose ``expm1`` sums are half of 10^4 renormalise upwards: a column's target
    below what rounding every value down gives is approached by rounding every value down,
    and nothing moves further than one count."""
    x, lib = _generated(seed=8, jitter=0.0)
    x = np.log1p(np.expm1(x) * 0.5)
    x = x + np.random.default_rng(9).uniform(0, 0.2, x.shape) * (x > 0)
    k = np.floor(np.expm1(x) * lib[:, None] / 1e4)
    out = log1p_to_counts(x, lib, rng=np.random.default_rng(10), rounding="matched")
    assert np.all((out == k) | (out == k + 1))
    floor_means = _renormalised(k).mean(0)
    out_of_reach = floor_means > x.mean(0)
    assert out_of_reach.any()
    np.testing.assert_array_equal(out[:, out_of_reach], k[:, out_of_reach])
