"""Spread calibration of the generated cells (``SamplingConfig(spread=...)``)."""

from __future__ import annotations

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import scdit
from scdit.model import SPREAD_RANGE, spread_applies, spread_factors, widen
from tests.helpers import TINY, make_counts_adata


def _cells(keys=("cell_type",)):
    """A stand-in for the model's cell store, as far as :func:`widen` reads it."""
    def context_keys(cov_df, n):
        return [tuple(r) for r in cov_df[list(keys)].astype(str).to_numpy()] if keys \
            else [()] * n
    return SimpleNamespace(context_keys=context_keys, covariates=SimpleNamespace(keys=keys))


def test_widen_keeps_each_contexts_mean_and_scales_its_deviations():
    rng = torch.Generator().manual_seed(0)
    tokens = torch.randn(10, 2, 3, generator=rng)
    kappa = torch.tensor([[1.0, 2.0, 0.5], [1.5, 1.0, 1.0]])
    cov_df = pd.DataFrame({"cell_type": list("aaaabbbbbb")})
    out = widen(tokens, kappa, _cells(), cov_df)
    for rows in (slice(0, 4), slice(4, 10)):
        mean = tokens[rows].mean(0)
        torch.testing.assert_close(out[rows].mean(0), mean)
        torch.testing.assert_close(out[rows] - mean, kappa * (tokens[rows] - mean))
    # without covariates: one context
    one = widen(tokens, kappa, _cells(()), None)
    torch.testing.assert_close(one - tokens.mean(0), kappa * (tokens - tokens.mean(0)))


def _fake_model(ratio: float, n_per=60):
    """A model whose generated cells are ``ratio`` times narrower than the real ones (per
    token value), with two contexts × one perturbation stored."""
    rng = np.random.default_rng(0)
    ctx = np.repeat(["a", "b"], 2 * n_per)
    lab = np.tile(np.repeat(["ctrl", "P"], n_per), 2)
    X = rng.normal(size=(len(ctx), 6)) * np.array([1, 2, 3, 1, 1, 1.0])
    X[:, 5] = 0.0  # a constant value: left at 1
    ref = ad.AnnData(X.astype(np.float32), obs=pd.DataFrame(
        {"condition": lab, "cell_type": ctx}, index=[str(i) for i in range(len(ctx))]))
    calls = []

    def predict(label, *, source, covariates, **kw):
        calls.append((label, covariates["cell_type"], source.n_obs, kw["effects"],
                      kw["sampling"].spread))
        real = ref[(ref.obs.condition == label).to_numpy()
                   & (ref.obs.cell_type == covariates["cell_type"]).to_numpy()].X
        gen = (real - real.mean(0)) / ratio + real.mean(0)
        return ad.AnnData(gen[: source.n_obs])

    cells = SimpleNamespace(
        reference=ref, key="condition", vocab=SimpleNamespace(control="ctrl"),
        covariates=SimpleNamespace(keys=("cell_type",)),
        canonical_labels=lambda: lab, reference_contexts=lambda: [(c,) for c in ctx])
    model = _Model()  # cached by weak reference: a plain class
    model.cells, model.predict, model.generator = cells, predict, SimpleNamespace(shape=(2, 3))
    model.encode = lambda a: torch.as_tensor(np.asarray(a.X)).reshape(-1, 2, 3)
    return model, calls


class _Model:
    pass


def test_spread_factors_are_the_ratio_of_real_to_generated_spread():
    for ratio in (1.5, 0.8, 5.0):
        model, calls = _fake_model(ratio)
        kappa = spread_factors(model)
        assert kappa.shape == (2, 3)
        expected = np.clip(ratio, *SPREAD_RANGE)
        np.testing.assert_allclose(kappa.flatten()[:5].numpy(), expected, rtol=1e-5)
        assert kappa.flatten()[5] == 1.0  # no spread to compare
        # one call per (context, perturbation) group, generator alone, from control cells
        assert sorted(c[:2] for c in calls) == [("P", "a"), ("P", "b")]
        assert all(c[3:] == ("none", "raw") and c[2] <= 60 for c in calls)
        assert spread_factors(model) is kappa  # cached


def test_groups_with_too_few_cells_give_no_factors():
    model, calls = _fake_model(2.0, n_per=10)
    assert spread_factors(model) is None and not calls


def test_the_cells_generated_stay_within_the_budget():
    """Two groups and a budget of 40 cells at 20 per group: 20 cells each; a budget of 20
    allows one group only (drawn)."""
    for budget, groups in ((40, 2), (20, 1)):
        model, calls = _fake_model(1.5)
        kappa = spread_factors(model, max_cells=budget, min_cells=20)
        assert len(calls) == groups and sum(c[2] for c in calls) <= budget
        assert torch.all((kappa >= SPREAD_RANGE[0]) & (kappa <= SPREAD_RANGE[1]))


@pytest.fixture(scope="module")
def held_out_model():
    adata = make_counts_adata(seed=3)
    adata.obs["cell_type"] = np.array(["A", "B"])[np.arange(adata.n_obs) % 2]
    held = ((adata.obs.cell_type == "B") & (adata.obs.condition == "G1")).to_numpy()
    source = adata[((adata.obs.cell_type == "B") & (adata.obs.condition == "ctrl")).to_numpy()]
    model = scdit.fit(adata[~held].copy(), "condition", covariate_keys=["cell_type"],
                      source="control", max_steps=30, seed=0, **TINY)
    return model, source.copy()


def test_auto_calibrates_held_out_context_models_only(held_out_model, counts_model):
    model, source = held_out_model
    assert model.summary["contexts_lacking_perturbations"] == 1
    auto = scdit.SamplingConfig()
    assert spread_applies(auto, model) and not spread_applies(auto, counts_model)
    assert spread_applies(scdit.SamplingConfig(spread="calibrated"), counts_model)
    assert not spread_applies(scdit.SamplingConfig(spread="raw"), model)
    out = model.predict("G1", source=source, seed=0, effects="none", verbose=False)
    raw = model.predict("G1", source=source, seed=0, effects="none", verbose=False,
                        sampling=scdit.SamplingConfig(spread="raw"))
    assert out.uns["scdit"]["spread"] == "calibrated" and raw.uns["scdit"]["spread"] == "raw"
    kappa = spread_factors(model)
    assert kappa.shape == model.generator.shape
    assert torch.all((kappa >= SPREAD_RANGE[0]) & (kappa <= SPREAD_RANGE[1]))
    # the same cells, each moved along its deviation from the context's generated mean
    a, b = model.encode(out), model.encode(raw)
    assert not torch.allclose(a, b)
    again = model.predict("G1", source=source, seed=0, effects="none", verbose=False)
    np.testing.assert_array_equal(np.asarray(again.X.todense() if hasattr(again.X, "todense")
                                             else again.X),
                                  np.asarray(out.X.todense() if hasattr(out.X, "todense")
                                             else out.X))


def test_an_unknown_spread_is_refused():
    with pytest.raises(ValueError, match="SamplingConfig.spread = 'wide' is not one of"):
        scdit.SamplingConfig(spread="wide")


def test_widening_keeps_the_decoded_mean_of_a_clipping_tokenizer(held_out_model):
    """The genes tokenizer clips log1p at 0: a wider spread alone would raise the decoded mean
    of lowly expressed genes; widen shifts each gene back to the uncalibrated decoded mean."""
    model, source = held_out_model
    tok = model.tokenizer
    assert tok.clips_output
    tokens = model.encode(source) + 0.3 * torch.randn(source.n_obs, *model.generator.shape,
                                                        generator=torch.Generator().manual_seed(1))
    kappa = torch.full(model.generator.shape, 1.8)
    cov_df = pd.DataFrame({"cell_type": ["B"] * source.n_obs})
    plain = widen(tokens, kappa, model.cells, cov_df)
    kept = widen(tokens, kappa, model.cells, cov_df, tok)
    before, wide, out = (tok.decode(t).mean(0) for t in (tokens, plain, kept))
    assert (wide - before).max() > 1e-2  # clipping alone raised some means
    torch.testing.assert_close(out, before, atol=1e-4, rtol=0)
    assert (tok.decode(kept).std(0) > tok.decode(tokens).std(0)).float().mean() > 0.5


def test_a_dose_model_keeps_the_raw_spread(counts_adata, tiny):
    """Groups would mix doses: a model fitted with doses is never calibrated, and predicts."""
    adata = counts_adata.copy()
    adata.obs["dose"] = np.where(adata.obs.condition == "ctrl", 0.0,
                                 np.where(np.arange(adata.n_obs) % 2, 1.0, 10.0))
    model = scdit.fit(adata, "condition", dose_key="dose", max_steps=5, **tiny)
    assert not spread_applies(scdit.SamplingConfig(spread="calibrated"), model)
    pred = model.predict("G1", n_cells=5, dose=10.0, seed=0, verbose=False,
                         sampling=scdit.SamplingConfig(spread="calibrated"))
    assert pred.uns["scdit"]["spread"] == "raw"
