"""Empirical-Bayes shrinkage in predict: the shrunk estimate, the default rule, its limits."""

import numpy as np
import pytest
import torch

from scdit import EffectConfig
from scdit.effects import SEEN_LIMIT

ALWAYS_SHRUNK = EffectConfig("always", shrink=True)
ALWAYS_RAW = EffectConfig("always", shrink=False)


def _context_tokens(model, cell_type: str) -> dict[str, np.ndarray]:
    obs = model.reference.obs
    out = {}
    for label in obs.condition.astype(str).unique():
        rows = np.flatnonzero((obs.condition.astype(str) == label).to_numpy()
                              & (obs.cell_type.astype(str) == cell_type).to_numpy())
        if len(rows):
            out[label] = model.encode(model.reference[rows]).double().flatten(1).numpy()
    return out


@pytest.mark.parametrize("limit", [None, 0.05])
def test_shrunk_anchor_is_control_plus_posterior_effect(counts_model, monkeypatch, limit):
    """effects="always", shrink=True: a seen perturbation's mean is the control mean plus
    Σ (Σ + N)⁻¹ d, moved at most SEEN_LIMIT standard errors from d, with Σ, N and d computed
    here from the stored reference cells."""
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
    post = sigma @ np.linalg.pinv(sigma + np.diag(n["G1"])) @ d["G1"]
    # a seen perturbation's shrinkage is limited to SEEN_LIMIT standard errors (noise floored
    # at 1 % of its mean, as the posterior's); the default limit does not bind on this tiny
    # model, a small one (monkeypatched) does on most coordinates
    k = SEEN_LIMIT if limit is None else limit
    monkeypatch.setattr("scdit.effects._estimators.SEEN_LIMIT", k)
    se = np.sqrt(np.maximum(n["G1"], 1e-2 * n["G1"].mean()))
    limited = d["G1"] + np.clip(post - d["G1"], -k * se, k * se)
    if limit is not None:
        assert np.mean(~np.isclose(limited, post)) > 0.5
    post = limited
    expected = (c_mean + post) / std
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
    # a seen label's training mean: raw by default here too, shrunk when asked
    np.testing.assert_array_equal(tok("G1"), tok("G1", effects=EffectConfig(shrink=False)))
    assert not np.allclose(tok("G1"), tok("G1", effects=EffectConfig(shrink=True)))


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
