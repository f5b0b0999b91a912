"""Empirical-Bayes shrinkage of training effects (scdit.effects) and its use in predict."""

import numpy as np
import pytest

from scdit import EffectConfig
from scdit.effects import EffectPlan, EffectTable, effect_prior, group_moments, posterior_effect


def test_group_moments_hand_computed():
    mean, se2 = group_moments(np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 3.0]]))
    np.testing.assert_allclose(mean, [3.0, 1.0])
    np.testing.assert_allclose(se2, [4.0 / 3, 3.0 / 3])  # var (ddof 1) / n
    assert group_moments(np.ones((1, 4)))[1] is None


def test_one_dimensional_prior_and_posterior_by_hand():
    # effects 2 and 0 with noise 1 each: Σ = (4 + 0) / 2 − 1 = 1; E[δ | d=2, noise 1] = 1/(1+1)·2
    sigma = effect_prior(np.array([[2.0], [0.0]]), np.ones((2, 1)))
    np.testing.assert_allclose(sigma, [[1.0]])
    np.testing.assert_allclose(posterior_effect(np.array([2.0]), np.array([1.0]), sigma), [1.0])
    # effects no larger than their noise: Σ clipped to 0, everything shrunk to 0
    sigma0 = effect_prior(np.array([[0.5], [-0.5]]), np.ones((2, 1)))
    np.testing.assert_allclose(sigma0, [[0.0]])
    np.testing.assert_allclose(posterior_effect(np.array([3.0]), np.array([1.0]), sigma0), [0.0])


def test_limited_translation_by_hand():
    # Σ = 1, noise 4 (se 2), d = 10: posterior 10/5 = 2, i.e. 8 below d; a limit of 0.5 se
    # allows 1: 9; a limit of 5 se allows 10: the plain posterior
    sigma, d, noise = np.array([[1.0]]), np.array([10.0]), np.array([4.0])
    np.testing.assert_allclose(posterior_effect(d, noise, sigma), [2.0])
    np.testing.assert_allclose(posterior_effect(d, noise, sigma, limit=0.5), [9.0])
    np.testing.assert_allclose(posterior_effect(-d, noise, sigma, limit=0.5), [-9.0])
    np.testing.assert_allclose(posterior_effect(d, noise, sigma, limit=5.0), [2.0])
    np.testing.assert_allclose(posterior_effect(d, noise, sigma, limit=0.0), d)
    with pytest.raises(ValueError, match="limit"):
        posterior_effect(d, noise, sigma, limit=-1.0)


def test_seen_mean_is_limited_and_additive_is_not():
    from scdit.effects import SEEN_LIMIT, additive, seen_mean

    rng = np.random.default_rng(1)
    labels = np.repeat(["ctrl", *[f"P{i}" for i in range(12)]], 6)
    X = rng.normal(size=(len(labels), 5))
    X[labels == "P3", 0] += 4.0  # one large, idiosyncratic effect
    t = EffectTable(X, labels, [()] * len(labels), "ctrl")
    got = seen_mean(t, "P3", (), shrink=True).mean()
    np.testing.assert_allclose(got, t.shrunk_mean("P3", (), limit=SEEN_LIMIT))
    assert not np.allclose(got, t.shrunk_mean("P3", ()))
    raw = t.mean("P3", ())
    noise = t.stats(())["P3"][1] + t.stats(())["ctrl"][1]
    se = np.sqrt(np.maximum(noise, 1e-2 * noise.mean()))  # the posterior's noise floor
    assert np.all(np.abs(got - raw) <= SEEN_LIMIT * se + 1e-12)
    both = additive(t, ("P3", "P4"), (), shrink=True).mean()
    plain = t.shrunk_mean("P3", ()) + t.shrunk_mean("P4", ()) - t.mean("ctrl", ())
    np.testing.assert_allclose(both, plain)


def test_prior_is_psd_and_nearly_noise_free_posterior_projects_on_the_training_span():
    rng = np.random.default_rng(0)
    effects = rng.normal(size=(4, 9))
    sigma = effect_prior(effects, np.full((4, 9), 0.3))
    np.testing.assert_allclose(sigma, sigma.T, atol=1e-12)
    assert np.linalg.eigvalsh(sigma).min() > -1e-10
    exact = effect_prior(effects, np.zeros((4, 9)))
    np.testing.assert_allclose(exact, effects.T @ effects / 4, atol=1e-10)
    inside = effects[1] - 2 * effects[3]
    q, _ = np.linalg.qr(np.c_[effects.T, rng.normal(size=9)])
    outside = q[:, -1]  # orthogonal to every training effect
    tiny = np.full(9, 1e-8)  # (almost) noise-free estimate
    np.testing.assert_allclose(posterior_effect(inside, tiny, exact), inside, atol=1e-4)
    np.testing.assert_allclose(posterior_effect(outside, tiny, exact), np.zeros(9), atol=1e-4)
    # more noise shrinks more
    small, large = (np.linalg.norm(posterior_effect(inside, np.full(9, s), exact)) for s in (0.1, 10.0))
    assert np.linalg.norm(inside) > small > large


def test_effect_prior_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="effects and noise must both be"):
        effect_prior(np.zeros((3, 4)), np.zeros((3, 5)))


def test_shrink_true_needs_a_prior():
    # control and a single perturbation: no prior can be estimated
    rng = np.random.default_rng(0)
    table = EffectTable(rng.normal(size=(20, 3)), ["ctrl"] * 10 + ["G1"] * 10, [()] * 20, "ctrl")
    plan = EffectPlan(table, ["ctrl", "G1"])
    with pytest.raises(ValueError, match="shrink=True needs at least two perturbations"):
        plan.resolve("G1", ("G1",), [()], EffectConfig("always", shrink=True), {}, False)
    est = plan.resolve("G1", ("G1",), [()], EffectConfig("always"), {}, False)[()]
    np.testing.assert_allclose(est.mean(), table.mean("G1", ()))


def test_constant_coordinates_do_not_break_the_posterior():
    """Token padding or never-detected genes: zero effect, zero noise, zero prior variance."""
    rng = np.random.default_rng(1)
    effects = np.c_[rng.normal(size=(12, 6)), np.zeros((12, 3))]
    noise = np.c_[np.full((12, 6), 0.2), np.zeros((12, 3))]
    sigma = effect_prior(effects, noise)
    d, n = np.r_[rng.normal(size=6), 0.0, 0.0, 0.0], np.r_[np.full(6, 0.2), 0.0, 0.0, 0.0]
    post = posterior_effect(d, n, sigma)
    assert np.isfinite(post).all()
    np.testing.assert_allclose(post[6:], 0.0, atol=1e-12)
    s = sigma[:6, :6]
    np.testing.assert_allclose(post[:6], s @ np.linalg.solve(s + np.diag(n[:6]), d[:6]), atol=1e-8)

