"""Hand-computed checks of the pure metric functions in scdit.evaluate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scdit.evaluate import _metrics as M
from scdit.evaluate import group_stats, top_k_de, welch_t, welch_t_cells


def test_pearson_known_values():
    assert M.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(M.pearson([1, 1, 1], [1, 2, 3]))
    rows = M.pearson(np.array([[1, 2, 3, 4], [1, 2, 3, 4]]), np.array([[1, 3, 2, 4], [4, 3, 2, 1]]))
    np.testing.assert_allclose(rows, [0.8, -1.0])


def test_pearson_delta_and_gene_subsets():
    ctrl = np.array([1.0, 1.0, 1.0, 1.0])
    real = ctrl + np.array([1.0, 2.0, 3.0, 4.0])
    pred = ctrl + np.array([1.0, 3.0, 2.0, 4.0])
    assert M.pearson_delta(pred, real, ctrl) == pytest.approx(0.8)
    assert M.pearson_delta(pred, real, ctrl, genes=[0, 3]) == pytest.approx(1.0)
    # 2-D gene index: one subset per row
    genes = np.array([[0, 3], [1, 2]])
    out = M.pearson_delta(np.stack([pred, pred]), np.stack([real, real]), ctrl, genes=genes)
    np.testing.assert_allclose(out, [1.0, -1.0])
    # Systema: subtracting the perturbation mean removes the shared shift
    mu = ctrl + 10.0
    assert M.pearson_delta_pert_mean(pred, real, mu) == pytest.approx(0.8)
    assert np.isnan(M.pearson_delta_pert_mean(mu, real, mu))


def test_errors_and_r2():
    pred = np.array([1.0, 2.0, 3.0, 5.0])
    real = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.mse(pred, real) == pytest.approx(0.25)
    assert M.mae(pred, real) == pytest.approx(0.25)
    assert M.mse(pred, real, genes=[3]) == pytest.approx(1.0)
    assert M.l2(pred, real) == pytest.approx(1.0)
    # sklearn R²: 1 - 1 / 5
    assert M.r2_score(pred, real) == pytest.approx(0.8)
    assert M.r2_score(np.zeros(4), real) < 0


def test_direction_accuracy():
    pred = np.array([1.0, -1.0, 0.5, -2.0])
    real = np.array([2.0, 1.0, 1.0, -1.0])
    assert M.direction_accuracy(pred, real) == pytest.approx(0.75)
    assert M.direction_accuracy(pred, real, genes=[0, 1]) == pytest.approx(0.5)
    assert M.direction_accuracy(np.zeros(4), real) == 0.0


def test_welch_t_matches_scipy_and_ranks():
    a = np.array([[1.0, 10.0, 5.0], [2.0, 0.0, 5.1], [3.0, 20.0, 5.2]])
    b = np.array([[4.0, 0.0, 5.0], [6.0, 1.0, 5.0], [8.0, 2.0, 5.0]])
    t = welch_t_cells(a, b)
    # gene 0 by hand: means 2 vs 6, variances 1 vs 4 → t = -4 / sqrt(5/3)
    assert t[0] == pytest.approx(-4 / np.sqrt(5 / 3))
    ref = stats.ttest_ind(a[:, :2], b[:, :2], equal_var=False).statistic
    np.testing.assert_allclose(t[:2], ref)
    assert t[2] == pytest.approx(0.1 / np.sqrt(0.01 / 3))
    # gene 1 has the largest mean difference (9) but is noisy: it ranks below the tiny, clean
    # shift of gene 2 (|t| 1.55 < 1.73 < 3.10 for gene 0)
    assert list(top_k_de(t, 3)) == [0, 2, 1]
    assert list(top_k_de(t, 1)) == [0]
    assert top_k_de(np.stack([t, -t[::-1]]), 2).tolist() == [[0, 2], [2, 0]]


def test_welch_t_zero_variance():
    t = welch_t(np.array([1.0, 2.0, 3.0]), np.zeros(3), 5, np.array([1.0, 1.0, 4.0]), 0.0, 5)
    assert t[0] == 0.0 and t[1] == np.inf and t[2] == -np.inf
    # infinite |t| first; tie broken by |mean difference|; constant gene last
    diff = np.array([0.0, 1.0, -1.5])
    assert list(top_k_de(t, 3, diff=diff)) == [2, 1, 0]


def test_group_stats_dense_and_sparse():
    import scipy.sparse as sp

    X = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 0.0], [7.0, 1.0]])
    codes = np.array([0, 0, 1, -1])
    for mat in (X, sp.csr_matrix(X)):
        n, mean, var = group_stats(mat, codes, 2)
        np.testing.assert_allclose(n, [2, 1])
        np.testing.assert_allclose(mean, [[2.0, 1.0], [5.0, 0.0]])
        np.testing.assert_allclose(var, [[2.0, 2.0], [0.0, 0.0]])


def test_discrimination_constant_and_perfect():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(7, 50))
    const = np.repeat(rng.normal(size=(1, 50)), 7, axis=0)
    for metric in ("cosine", "l1", "l2"):
        assert M.discrimination(const, real, metric).mean() == pytest.approx(0.5, abs=1e-12)
        np.testing.assert_allclose(M.discrimination(real, real, metric), 1.0)
    # the zero vector (no-change prediction) is constant too
    assert M.discrimination(np.zeros((7, 50)), real, "cosine").mean() == pytest.approx(0.5)
    assert np.isnan(M.discrimination(real[:1], real[:1])).all()


def test_discrimination_ties_at_mid_rank():
    real = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # prediction equal to δ_0, which is tied with δ_1: rank 0.5 of N-1 = 3
    s = M.discrimination(real[:1], real, "l2", true_index=[0])
    assert s[0] == pytest.approx(1 - 0.5 / 3)
    # a prediction equidistant to all three candidates: rank 0 + 2/2 = 1 of N-1 = 2 → 0.5
    s = M.discrimination(np.zeros((1, 3)), real[[0, 2, 3, 1]][:3], "l2", true_index=[1])
    assert s[0] == pytest.approx(0.5)


def test_discrimination_excludes_all_target_genes():
    # δ_q = knockdown of its own target gene q plus a shared response on genes 4..9
    n, g = 4, 10
    shared = np.linspace(1, 2, g)
    shared[:n] = 0
    real = np.tile(shared, (n, 1))
    real[np.arange(n), np.arange(n)] = -3.0
    pred = real.copy()
    pred[:, n:] *= 1.5  # the shared response is right in direction only
    assert M.discrimination(pred, real, "l2").mean() == pytest.approx(1.0)
    # without the target genes nothing distinguishes the conditions: all tied → 0.5
    s = M.discrimination(pred, real, "l2", exclude_genes=np.arange(n))
    np.testing.assert_allclose(s, 0.5)
    mask = np.zeros(g, dtype=bool)
    mask[:n] = True
    np.testing.assert_allclose(M.discrimination(pred, real, "cosine", exclude_genes=mask), 0.5)


def _energy_brute(x, y):
    d = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).mean()  # noqa: E731
    return 2 * d(x, y) - d(x, x) - d(y, y)


def test_energy_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    assert M.energy_distance(x, x) == pytest.approx(0.0, abs=1e-10)
    y = rng.normal(loc=1.0, size=(30, 3))
    assert M.energy_distance(x, y) == pytest.approx(_energy_brute(x, y), rel=1e-10)
    # 1-D: equals the square of scipy's (CDF-based) energy distance
    u = np.array([0.0, 1.0, 3.0])
    v = np.array([2.0, 5.0])
    # by hand: E|u-v| = (2+5+1+4+1+2)/6 = 2.5, E|u-u'| = 2*(1+3+2)/9 = 4/3, E|v-v'| = 2*3/4 = 1.5
    expected = 2 * 2.5 - 4 / 3 - 1.5
    assert M.energy_distance(u[:, None], v[:, None]) == pytest.approx(expected)
    assert expected == pytest.approx(stats.energy_distance(u, v) ** 2)
    # precomputed within-set terms give the same value
    xx, yy = M.mean_pairwise_distance(x), M.mean_pairwise_distance(y)
    assert M.energy_distance(x, y, xx=xx, yy=yy) == pytest.approx(M.energy_distance(x, y))


def test_pairwise_distances_unknown_metric():
    with pytest.raises(ValueError, match="Unknown distance"):
        M.pairwise_distances(np.ones((2, 2)), np.ones((2, 2)), "chebyshev")
