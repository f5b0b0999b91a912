"""Empirical-Bayes shrinkage of training effects (scdit.effects) and its use in predict."""

import numpy as np
import pytest
import torch

from scdit import EffectConfig
from scdit.effects import EffectPlan, EffectTable, effect_prior, group_moments, posterior_effect

ALWAYS_SHRUNK = EffectConfig("always", shrink=True)
ALWAYS_RAW = EffectConfig("always", shrink=False)


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


def _context_tokens(model, cell_type: str) -> dict[str, np.ndarray]:
    obs = model.reference.obs
    out = {}
    for label in obs.condition.astype(str).unique():
        rows = np.flatnonzero((obs.condition.astype(str) == label).to_numpy()
                              & (obs.cell_type.astype(str) == cell_type).to_numpy())
        if len(rows):
            out[label] = model.encode(model.reference[rows]).double().flatten(1).numpy()
    return out


def test_shrunk_anchor_is_control_plus_posterior_effect(counts_model):
    """effects="always", shrink=True: a seen perturbation's mean is the control mean plus
    Σ (Σ + N)⁻¹ d with Σ, N and d computed here from the stored reference cells."""
    std = counts_model.tokenizer.std.numpy().astype(np.float64)  # work in log1p units
    tok = {k: v[:, :len(std)] * std for k, v in _context_tokens(counts_model, "T").items()}
    ctrl = tok.pop("ctrl")
    c_mean, c_se2 = ctrl.mean(0), ctrl.var(0, ddof=1) / len(ctrl)
    labels = [k for k, v in tok.items() if len(v) >= 2]
    d = {k: tok[k].mean(0) - c_mean for k in labels}
    n = {k: tok[k].var(0, ddof=1) / len(tok[k]) + c_se2 for k in labels}
    E = np.stack([d[k] for k in labels])
    sigma = E.T @ E / len(labels) - np.diag(np.mean([n[k] for k in labels], axis=0))
    w, v = np.linalg.eigh(sigma)
    sigma = (v * np.clip(w, 0, None)) @ v.T
    expected = (c_mean + sigma @ np.linalg.pinv(sigma + np.diag(n["G1"])) @ d["G1"]) / std
    cov = {"cell_type": "T"}
    out = torch.as_tensor(counts_model.sample("G1", 25, covariates=cov, output="tokens", seed=3,
                                              effects=ALWAYS_SHRUNK)).double()
    tk = counts_model.tokenizer
    decoded = tk.decode(out.float()).double().mean(0).numpy()
    target = np.clip(expected * std + tk.mean.numpy(), 0, None)  # the log1p mean it stands for
    np.testing.assert_allclose(decoded, target, atol=1e-4)
    raw = torch.as_tensor(counts_model.sample("G1", 25, covariates=cov, output="tokens", seed=3,
                                              effects=ALWAYS_RAW)).double()
    # only a constant shift per coordinate differs: the spread is the model's
    d = out - raw
    torch.testing.assert_close(d - d.mean(0), torch.zeros_like(d), atol=1e-4, rtol=0)
    assert not np.allclose(tk.decode(raw.float()).double().mean(0).numpy(), target, atol=1e-3)


def test_shrink_default_needs_ten_effects_and_errors(counts_model):
    cov = {"cell_type": "B"}

    def tok(label, **kw):
        return counts_model.sample(label, 10, covariates=cov, output="tokens", seed=1, **kw)

    # the tiny model has fewer than ten perturbations: the default uses raw means
    np.testing.assert_array_equal(tok("G2+G3"), tok("G2+G3", effects=EffectConfig(shrink=False)))
    assert not np.allclose(tok("G2+G3"), tok("G2+G3", effects=EffectConfig(shrink=True)))
    out = counts_model.predict("G2+G3", n_cells=4, covariates=cov, seed=0,
                               effects=EffectConfig(shrink=True))
    assert out.uns["scdit"]["shrink"] is True
    assert out.uns["scdit"]["mean_set_by"] == {"G2+G3 | B": "additive_shrunk"}
    assert counts_model.predict("G1", n_cells=3, seed=0).uns["scdit"]["shrink"] == "auto"
    with pytest.raises(ValueError, match="shrink=True shrinks the effects"):
        EffectConfig("none", shrink=True)
    with pytest.raises(ValueError, match="shrink must be None, True or False"):
        EffectConfig("always", shrink="yes")
    # predictions without an estimate ignore shrink (nothing to shrink)
    np.testing.assert_array_equal(tok("G1"), tok("G1", effects=EffectConfig(shrink=True)))


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


def test_default_shrink_respects_the_effect_count_and_size_limits(counts_model, monkeypatch):
    cov = {"cell_type": "B"}

    def tok(**kw):
        return counts_model.sample("G2+G3", 10, covariates=cov, output="tokens", seed=4, **kw)

    plan = counts_model.targets.plan
    monkeypatch.setattr(plan, "min_effects", 2)  # the tiny model now has "enough"
    np.testing.assert_array_equal(tok(), tok(effects=EffectConfig(shrink=True)))
    monkeypatch.setattr(plan, "max_dim", 1)  # ... but its token space is "too large"
    np.testing.assert_array_equal(tok(), tok(effects=EffectConfig(shrink=False)))
    assert not np.allclose(tok(), tok(effects=EffectConfig(shrink=True)))  # True still forces it
