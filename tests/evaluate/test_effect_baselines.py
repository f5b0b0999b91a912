"""Baselines that share their estimator with the model (scdit.effects)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from scdit.evaluate import baseline_predictions


def _contexts(n_ctx: int, seed: int = 0, g: int = 20) -> ad.AnnData:
    """log1p-like data: ``n_ctx`` cell types, control and ``drug`` cells in each; the drug's
    effect is the same vector in every context plus a context-specific part."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 1, g)
    X, cond, ctx = [], [], []
    for k in range(n_ctx):
        base = 3 + rng.normal(0, 0.5, g)
        for lab, mu in (("ctrl", base), ("drug", base + effect + rng.normal(0, 0.1, g))):
            X.append(np.clip(mu + rng.normal(0, 0.3, (30, g)), 0, None))
            cond += [lab] * 30
            ctx += [f"t{k}"] * 30
    obs = pd.DataFrame({"condition": cond, "cell_type": ctx})
    obs.index = obs.index.astype(str)
    return ad.AnnData(np.vstack(X).astype(np.float32), obs=obs)


def test_context_estimate_with_two_other_contexts_is_the_mean_shift():
    a = _contexts(3)
    held = (a.obs["cell_type"] == "t2") & (a.obs["condition"] == "drug")
    train = a[~held].copy()
    real = a[a.obs["cell_type"] == "t2"].copy()
    out = baseline_predictions(real, "condition", control="ctrl", train=train,
                               covariate_key="cell_type",
                               baselines=("context_shift", "context_estimate"))
    np.testing.assert_allclose(out["context_estimate"].X, out["context_shift"].X, atol=1e-5)


def test_context_estimate_uses_the_loco_choice_with_more_contexts():
    a = _contexts(5)
    held = (a.obs["cell_type"] == "t4") & (a.obs["condition"] == "drug")
    train, real = a[~held].copy(), a[a.obs["cell_type"] == "t4"].copy()
    out = baseline_predictions(real, "condition", control="ctrl", train=train,
                               covariate_key="cell_type", baselines=("context_estimate",))
    pred = np.asarray(out["context_estimate"].X).mean(0)
    truth = np.asarray(real[real.obs["condition"] == "drug"].X).mean(0)
    ctrl = np.asarray(real[real.obs["condition"] == "ctrl"].X).mean(0)
    assert np.corrcoef(pred - ctrl, truth - ctrl)[0, 1] > 0.9


def test_context_estimate_without_train_never_sees_the_scored_cells():
    """With ``train=None`` the source is ``real`` minus the scored group, projection basis
    included: the same as passing that reduced set as ``train``."""
    a = _contexts(4, g=80)  # enough genes for a 50-axis expression basis
    scored = ((a.obs["cell_type"] == "t3") & (a.obs["condition"] == "drug")).to_numpy()
    kw = dict(control="ctrl", covariate_key="cell_type", baselines=("context_estimate",),
              conditions=["drug"])
    left_out = baseline_predictions(a, "condition", **kw)["context_estimate"]
    explicit = baseline_predictions(a, "condition", train=a[~scored].copy(), **kw)
    explicit = explicit["context_estimate"]
    rows = (left_out.obs["cell_type"] == "t3").to_numpy()
    np.testing.assert_allclose(np.asarray(left_out.X)[rows],
                               np.asarray(explicit.X)[(explicit.obs["cell_type"] == "t3")
                                                      .to_numpy()], atol=1e-5)
