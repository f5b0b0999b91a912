"""Target prior: an unseen knock-out's target gene is knocked down."""

from __future__ import annotations

import numpy as np
import pytest

import scdit


def test_target_prior_knocks_down_unseen_target(counts_adata, tiny):
    from scdit.conditions import target_prior
    from scdit.data import counts_to_log1p

    train = counts_adata[counts_adata.obs.condition != "G3"].copy()
    prior = target_prior(counts_to_log1p(train.X), train.var_names, train.obs.condition, "ctrl")
    assert prior["n"] == 2  # G1, G2 are measured singles (G1+G2 is not a single)
    assert np.exp(prior["log_ratio"]) == pytest.approx(0.1, abs=0.08)  # simulated ×0.1
    model = scdit.fit(train, "condition", max_steps=10, seed=0,
                      conditions={"target_marks": False}, **tiny)
    ctrl = train[train.obs.condition == "ctrl"].copy()
    on = model.predict("G3", source=ctrl, seed=0)
    off = model.predict("G3", source=ctrl, seed=0,
                            effects=scdit.EffectConfig(target_prior=False))
    j = list(train.var_names).index("G3")
    assert on.X[:, j].sum() < 0.4 * off.X[:, j].sum()
    others = [i for i in range(train.n_vars) if i != j]
    assert np.array_equal(on.X[:, others].toarray(), off.X[:, others].toarray())
    # seen perturbations are left to the model
    a = model.predict("G1", source=ctrl, seed=0)
    b = model.predict("G1", source=ctrl, seed=0, effects=scdit.EffectConfig(target_prior=False))
    assert np.array_equal(a.X.toarray(), b.X.toarray())


def test_target_prior_leaves_marked_targets_to_the_network(counts_adata, tiny):
    train = counts_adata[counts_adata.obs.condition != "G3"].copy()
    model = scdit.fit(train, "condition", max_steps=10, seed=0, **tiny)
    assert model.config.conditions.target_marks  # G1, G2 mark modelled genes
    ctrl = train[train.obs.condition == "ctrl"].copy()
    on = model.predict("G3", source=ctrl, seed=0)
    off = model.predict("G3", source=ctrl, seed=0, effects=scdit.EffectConfig(target_prior=False))
    assert np.array_equal(on.X.toarray(), off.X.toarray())
