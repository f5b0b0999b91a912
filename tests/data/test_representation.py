"""Representation detection and counts <-> log1p conversion."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scdit.data._representation import (
    counts_to_log1p,
    detect_representation,
    library_size,
    log1p_to_counts,
    renormalise_log1p,
    to_log1p,
)


def test_detect_representation():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (30, 8)).astype(np.float32)
    assert detect_representation(counts) == "counts"
    assert detect_representation(sp.csr_matrix(counts)) == "counts"
    log = counts_to_log1p(counts)
    assert detect_representation(log) == "log1p"
    assert detect_representation(sp.csr_matrix(log)) == "log1p"


def test_counts_to_log1p_sparse_matches_dense_and_log1p_unchanged():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (30, 8)).astype(np.float32)
    counts[3] = 0  # empty cell stays zero
    dense = counts_to_log1p(counts)
    sparse = counts_to_log1p(sp.csr_matrix(counts))
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-6)
    assert np.all(dense[3] == 0)
    lib = library_size(counts)
    np.testing.assert_allclose(np.expm1(dense[0]).sum(), 1e4, rtol=1e-4)
    assert lib[0] == counts[0].sum()
    assert to_log1p(dense, "log1p") is not None
    np.testing.assert_array_equal(to_log1p(dense), dense)


def test_log1p_to_counts_inverse_and_unbiased():
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (50, 20)).astype(np.float64)
    lib = library_size(counts)
    back = log1p_to_counts(counts_to_log1p(counts), lib, rng=np.random.default_rng(1))
    assert np.all(back >= 0) and np.array_equal(back, np.round(back))
    assert np.mean(back == counts) > 0.99
    # stochastic rounding keeps the expected count (unbiased="counts") ...
    x = np.full((20000, 1), np.log1p(2.3e4 / 1e4 * 1.37), dtype=np.float32)  # mu = 1.37 * 2.3
    draws = log1p_to_counts(x, np.full(20000, 1e4), rng=np.random.default_rng(2),
                            unbiased="counts")
    assert set(np.unique(draws)) <= {3.0, 4.0}
    assert draws.mean() == pytest.approx(2.3 * 1.37, abs=0.02)
    # ... or, by default, the expected log1p-normalised value: at a library of 200 a value
    # between the levels of 0 and 1 UMI (0 and log1p(50)) keeps its mean after rounding
    lib200 = np.full(40000, 200.0)
    x = np.full((40000, 1), 1.3)
    draws = log1p_to_counts(x, lib200, rng=np.random.default_rng(3))
    assert set(np.unique(draws)) <= {0.0, 1.0}
    back = np.log1p(draws * 1e4 / lib200[:, None])
    assert back.mean() == pytest.approx(1.3, abs=0.02)
    assert draws.mean() == pytest.approx(1.3 / np.log1p(50.0), abs=0.01)
    counts_way = log1p_to_counts(x, lib200, rng=np.random.default_rng(3), unbiased="counts")
    assert np.log1p(counts_way * 50.0).mean() < 0.5  # rounding in count space: biased low
    with pytest.raises(ValueError, match="unbiased"):
        log1p_to_counts(x, lib200, unbiased="mean")
    with pytest.raises(ValueError, match="rounding must be"):
        log1p_to_counts(x, lib200, rounding="nearest")
    # negative log1p (from a generator overshoot) is clipped to zero counts
    assert np.all(log1p_to_counts(np.full((2, 3), -1.0), np.ones(2) * 1e4) == 0)


def test_systematic_rounding_keeps_each_value_and_fixes_column_sums():
    """Each value rounds up with its own probability, as with independent rounding, but a
    column's number of round-ups is floor or ceil of the sum of its probabilities."""
    lib = np.full(12, 200.0)  # levels 0, log1p(50), log1p(100), ...
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, np.log1p(100.0), (12, 5))
    draws = np.stack([log1p_to_counts(x, lib, rng=np.random.default_rng(s),
                                      rounding="systematic") for s in range(4000)])
    indep = np.stack([log1p_to_counts(x, lib, rng=np.random.default_rng(s))
                      for s in range(4000)])
    np.testing.assert_allclose(draws.mean(0), indep.mean(0), atol=0.035)  # same marginals
    assert set(np.unique(draws)) <= {0.0, 1.0, 2.0}
    back = np.log1p(draws * 50.0)
    np.testing.assert_allclose(back.mean(0), x, atol=0.1)  # unbiased in log1p, per value
    # the column means vary much less between draws than with independent rounding
    sd_sys, sd_ind = back.mean(1).std(0), np.log1p(indep * 50.0).mean(1).std(0)
    assert np.all(sd_sys < 0.6 * sd_ind)
    k = np.floor(np.expm1(x) / 50.0)
    p = (x - np.log1p(k * 50.0)) / (np.log1p((k + 1) * 50.0) - np.log1p(k * 50.0))
    ups = (draws - k).sum(1)  # (draws, columns)
    assert np.all(ups >= np.floor(p.sum(0)) - 1e-9) and np.all(ups <= np.ceil(p.sum(0)) + 1e-9)
    # one row: plain independent rounding
    one = log1p_to_counts(x[:1], lib[:1], rng=np.random.default_rng(1), rounding="systematic")
    np.testing.assert_array_equal(one, log1p_to_counts(x[:1], lib[:1],
                                                       rng=np.random.default_rng(1)))


def test_clipped_mean_shift_is_exact():
    """The shift gives the wanted clipped mean, by hand on a small column and on random ones."""
    from scdit.data import clipped_mean_shift

    # column (2, 0, -2): a mean of 1 needs (2 + s) + max(s, 0) = 3, so s = 0.5 (two positive)
    col = np.array([[2.0], [0.0], [-2.0]])
    assert clipped_mean_shift(col, np.array([1.0])) == pytest.approx([0.5], abs=1e-12)
    # a mean of 0.5 keeps one value positive: (2 + s) / 3 = 0.5, s = -0.5
    assert clipped_mean_shift(col, np.array([0.5])) == pytest.approx([-0.5], abs=1e-12)
    # a target of 0 (or below) zeroes the column: the shift is -max
    assert clipped_mean_shift(col, np.array([-1.0])) == pytest.approx([-2.0])
    rng = np.random.default_rng(0)
    u = rng.normal(0.2, 1.5, (40, 25))
    u[:, 3] = 0.7  # ties
    target = rng.uniform(0.05, 2.0, 25)
    s = clipped_mean_shift(u, target)
    assert np.allclose(np.maximum(u + s, 0.0).mean(0), target, atol=1e-10)
    assert clipped_mean_shift(u[:0], target).shape == (25,)
    # targets exactly at a kink (the clipped mean at s = -u_j), where rounding once left no
    # piece of the piecewise-linear mean to solve in
    for trial in range(300):
        col = np.round(rng.normal(0, 2, (int(rng.integers(2, 30)), 1)), int(rng.integers(0, 3)))
        kink = np.maximum(col - col[rng.integers(0, len(col))], 0).mean(0)
        if kink[0] > 0:
            s = clipped_mean_shift(col, kink)
            assert np.maximum(col + s, 0).mean(0) == pytest.approx(kink, abs=1e-10), trial
    # a column with NaN has no shift
    assert np.isnan(clipped_mean_shift(np.array([[1.0, np.nan], [2.0, 1.0]]),
                                       np.array([1.0, 1.0]))).tolist() == [False, True]


def test_mean_fold_change_scales_each_gene_to_its_target():
    """One factor per column on expm1 gives the wanted log1p mean; zeros stay zeros; columns
    out of reach of FOLD_MAX (or holding NaN) give NaN for the caller to shift."""
    from scdit.data import FOLD_MAX, mean_fold_change

    # by hand: column (log1p 1, log1p 3, 0) scaled by 3 is (log1p 3, log1p 9, 0)
    col = np.log1p(np.array([[1.0], [3.0], [0.0]]))
    want = np.log1p(np.array([3.0, 9.0, 0.0])).mean(keepdims=True)
    assert mean_fold_change(col, want) == pytest.approx([3.0], rel=1e-9)
    rng = np.random.default_rng(0)
    u = np.log1p(rng.poisson(rng.uniform(0.5, 20, 30), (60, 30)).astype(float))
    wanted = np.exp(rng.uniform(-3, 3, 30))  # factors within reach
    target = np.log1p(wanted * np.expm1(u)).mean(0)
    target[7] = 0.0
    u[:, 5] = 0.0  # nothing expressed: out of reach
    r = mean_fold_change(u, target)
    ok = np.isfinite(r)
    assert ok.tolist() == [j != 5 for j in range(30)] and r[7] == 0.0
    np.testing.assert_allclose(np.delete(r, [5, 7]), np.delete(wanted, [5, 7]), rtol=1e-6)
    scaled = np.log1p(r[ok] * np.expm1(u[:, ok]))
    np.testing.assert_allclose(scaled.mean(0), target[ok], atol=1e-9)
    assert np.all(scaled[u[:, ok] == 0] == 0)
    # one small value would have to carry a mean a thousandfold away: NaN, not an outlier
    few = np.zeros((1000, 1))
    few[0] = 0.3
    assert np.isnan(mean_fold_change(few, np.array([0.1])))
    within = np.array([np.log1p(FOLD_MAX / 2 * np.expm1(0.3)) / 1000])
    assert mean_fold_change(few, within) == pytest.approx([FOLD_MAX / 2], rel=1e-6)
    # NaN in a column, no rows, a negative value
    u[3, 2] = np.nan
    assert np.isnan(mean_fold_change(u, target)[2])
    assert np.array_equal(mean_fold_change(u[:0, :2], np.array([0.0, 1.0])), [0.0, np.nan],
                          equal_nan=True)
    with pytest.raises(ValueError, match="non-negative"):
        mean_fold_change(-np.abs(np.nan_to_num(u)) - 1, target)


def test_mean_fold_or_shift_falls_back_to_the_clipped_shift():
    """Where no factor reaches the target (nothing expressed) the column is shifted instead;
    elsewhere the factor is mean_fold_change's and the shift 0."""
    from scdit.data import mean_fold_change, mean_fold_or_shift

    u = np.log1p(np.array([[0.0, 2.0], [0.0, 5.0], [0.0, 0.0]]))
    target = np.array([0.4, 1.0])
    factor, shift = mean_fold_or_shift(u, target)
    assert factor[0] == 1.0 and shift[1] == 0.0
    assert factor[1] == pytest.approx(mean_fold_change(u, target)[1])
    got = np.maximum(np.log1p(factor * np.expm1(u)) + shift, 0).mean(0)
    np.testing.assert_allclose(got, target, atol=1e-9)


def test_renormalise_log1p_projects_rows_onto_the_normalisation_total():
    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, (20, 12)).astype(np.float32)
    counts[5] = 0
    log = counts_to_log1p(counts)
    np.testing.assert_allclose(renormalise_log1p(log), log, rtol=1e-5, atol=1e-6)  # fixed point
    drifted = log + 0.4  # every gene too high: the totals are off
    drifted[2, :3] = -0.5  # below 0: clipped first
    drifted[5] = 0.0
    out = renormalise_log1p(drifted)
    assert out.dtype == np.float32 and out.shape == log.shape
    sums = np.expm1(out.astype(np.float64)).sum(1)
    np.testing.assert_allclose(sums[sums > 0], 1e4, rtol=1e-5)
    np.testing.assert_array_equal(out[5], 0)  # a row of zeros stays zero
    assert np.all(out[2, :3] == 0)
    # by hand: one row (1, 3) in expm1 space (sum 4) rescaled to target_sum 8 -> (2, 6)
    got = renormalise_log1p(np.log1p(np.array([[1.0, 3.0]])), target_sum=8.0)
    np.testing.assert_allclose(got, np.log1p([[2.0, 6.0]]), rtol=1e-6)
    # only column 1 rescaled, column 0 kept: (1, 3) -> (1, 7); a kept total already over the
    # target, or rescaled columns all 0, leave the row as it is
    x = np.log1p(np.array([[1.0, 3.0], [9.0, 1.0], [2.0, 0.0]]))
    got = renormalise_log1p(x, target_sum=8.0, columns=np.array([1]))
    np.testing.assert_allclose(got, np.log1p([[1.0, 7.0], [9.0, 1.0], [2.0, 0.0]]), rtol=1e-6)
