"""Held-out covariate contexts: the LOCO-chosen effect estimator and the projection (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from scdit.effects import (
    apply_effect,
    candidates,
    context_effect,
    expression_basis,
    loco_scores,
    pc_coordinates,
    project_effect,
)


def _cells(rng, n=200, d=12):
    return rng.normal(size=(n, d)) * np.linspace(3, 0.5, d)


def test_pc_coordinates_are_whitened():
    rng = np.random.default_rng(0)
    cells = _cells(rng)
    z = pc_coordinates(cells, cells, n_pcs=5)
    assert z.shape == (200, 5)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-10)


def test_two_contexts_give_the_mean_shift():
    rng = np.random.default_rng(1)
    E, C = rng.normal(size=(2, 12)), rng.normal(size=(2, 12))
    est, info = context_effect(E, C, rng.normal(size=12), _cells(rng))
    np.testing.assert_allclose(est, E.mean(0))
    assert info["method"] == "mean" and info["loco"] is None
    with pytest.raises(ValueError, match="≥ 2 training contexts"):
        context_effect(E[:1], C[:1], C[0], _cells(rng))


def test_exact_slope_is_found_and_extrapolated():
    """Effects linear in the control mean with slope -0.5: LOCO picks it, the estimate is exact."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=12)
    C = rng.normal(size=(5, 12))
    E = a + -0.5 * (C - C.mean(0))
    c = rng.normal(size=12)
    est, info = context_effect(E, C, c, _cells(rng))
    assert (info["method"], info["param"]) == ("slope", -0.5)
    assert info["loco"] == pytest.approx(1.0)
    np.testing.assert_allclose(est, a - 0.5 * (c - C.mean(0)), atol=1e-12)


def test_kernel_follows_the_closest_contexts():
    """Two groups of contexts with different responses: the new context, close to group A,
    gets (nearly) group A's effect, which the mean shift would halve."""
    rng = np.random.default_rng(3)
    cells = _cells(rng, d=8)
    centre_a, centre_b = np.zeros(8), np.r_[20.0, np.zeros(7)]
    C = np.vstack([centre_a + rng.normal(0, 0.1, (3, 8)), centre_b + rng.normal(0, 0.1, (3, 8))])
    resp_a, resp_b = rng.normal(size=8), rng.normal(size=8)
    E = np.vstack([resp_a + rng.normal(0, 0.05, (3, 8)), resp_b + rng.normal(0, 0.05, (3, 8))])
    est, info = context_effect(E, C, centre_a, cells)
    assert info["method"] == "kernel"
    assert np.corrcoef(est, resp_a)[0, 1] > 0.99
    assert info["loco"] > info["loco_mean"]


def test_identical_effects_keep_the_mean_shift():
    rng = np.random.default_rng(4)
    E = np.tile(rng.normal(size=10), (4, 1))
    C = rng.normal(size=(4, 10))
    scores = loco_scores(E, C, rng.normal(size=(4, 3)))
    assert len(scores) == len(candidates())
    est, info = context_effect(E, C, rng.normal(size=10), _cells(rng, d=10))
    # kernels tie with the mean (all effects equal); slopes other than 0 add the control offset
    assert info["method"] == "mean"
    np.testing.assert_allclose(est, E[0])


def test_estimators_are_linear_in_the_effects():
    """apply_effect reproduces every chosen estimate from its weights and slope (this is what
    carries the estimator over to the genes outside the model)."""
    rng = np.random.default_rng(6)
    for seed in range(6):
        r = np.random.default_rng(seed)
        E, C = r.normal(size=(5, 9)), r.normal(size=(5, 9))
        C[:, 0] *= 1 + 4 * (seed % 2)
        c = r.normal(size=9)
        est, info = context_effect(E, C, c, _cells(rng, d=9))
        np.testing.assert_allclose(apply_effect(info, E, C, c), est, atol=1e-12)
        assert info["weights"].sum() == pytest.approx(1.0)


# ------------------------------------------------------------------ low-rank projection of effects
def test_expression_basis_spans_the_top_axes():
    """Exact and randomised SVD agree on the span of a low-rank-plus-noise matrix's top axes;
    the basis is orthonormal, and too small data gives None."""
    rng = np.random.default_rng(7)
    axes = np.linalg.qr(rng.normal(size=(400, 4)))[0]  # (G, 4) true axes
    X = rng.normal(size=(600, 4)) * [30, 20, 10, 5] @ axes.T + rng.normal(0, 0.1, (600, 400)) + 3
    for rank in (4, 2):
        V = expression_basis(X, rank, exact_below=0)  # randomised branch
        assert V.shape == (400, rank)
        np.testing.assert_allclose(V.T @ V, np.eye(rank), atol=1e-10)
        exact = np.linalg.svd(X - X.mean(0), full_matrices=False)[2][:rank].T
        np.testing.assert_allclose(np.abs(exact.T @ V), np.eye(rank), atol=1e-6)
    assert expression_basis(X[:5], 4) is None  # rank >= n - 1
    assert expression_basis(X[:, :4], 4) is None  # rank >= G
    exact4, rand4 = expression_basis(X, 4), expression_basis(X, 4, exact_below=0)
    np.testing.assert_allclose(np.abs(exact4.T @ rand4), np.eye(4), atol=1e-6)
    sub = expression_basis(X, 4, max_cells=100, seed=1)  # subsample: same span, up to noise
    assert np.linalg.svd(axes.T @ sub, compute_uv=False).min() > 0.99


def test_project_effect_keeps_the_span_and_drops_the_rest():
    rng = np.random.default_rng(8)
    V = np.linalg.qr(rng.normal(size=(50, 3)))[0]
    inside = V @ rng.normal(size=3)
    noise = rng.normal(size=50)
    noise -= V @ (V.T @ noise)  # orthogonal to the span
    np.testing.assert_allclose(project_effect(inside + noise, V), inside, atol=1e-12)
    np.testing.assert_allclose(project_effect(noise, None), noise)
