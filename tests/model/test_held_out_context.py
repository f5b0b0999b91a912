"""predict on a held-out covariate context: the LOCO estimate sets the mean (model + effects)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import scdit
from scdit.effects import (
    context_effect,
)
from tests.helpers import TINY, make_counts_adata
from tests.model.effect_helpers import assert_constant_shift, decoded_mean

# ------------------------------------------------------------------ predict on a held-out context
CONTEXT_CONDITIONS = {"ctrl": 240, "G1": 160}


@pytest.fixture(scope="module")
def context_data():
    """Four cell types; G1 lifts genes 10-14 by a factor growing with the type, type D held out."""
    adata = make_counts_adata(seed=5, conditions=CONTEXT_CONDITIONS)
    n = adata.n_obs
    types = np.array(["A", "B", "C", "D"])[np.arange(n) % 4]
    adata.obs["cell_type"] = types
    X = adata.X.copy()
    for k, t in enumerate("ABCD"):
        X[types == t, 30 + k] *= 4.0  # a marker per type
    adata.X = X
    held = (adata.obs.cell_type == "D") & (adata.obs.condition == "G1")
    train = adata[~held.to_numpy()].copy()
    source = adata[((adata.obs.cell_type == "D") & (adata.obs.condition == "ctrl")).to_numpy()]
    model = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="control",
                      tokenizer=scdit.TokenizerConfig(n_top_genes=40), max_steps=30, seed=0,
                      **TINY)  # 10 genes outside the model
    return model, source.copy()


def _log1p_group_mean(model, label, cell_type):
    obs = model.reference.obs
    rows = np.flatnonzero((obs.condition.astype(str) == label).to_numpy()
                          & (obs.cell_type.astype(str) == cell_type).to_numpy())
    tokens = model.encode(model.reference[rows]).double()
    tk = model.tokenizer
    return tokens.reshape(len(rows), -1)[:, :tk.n_genes] * tk.std.double() + tk.mean.double()


def _independent_estimate(model, source):
    """The held-out context's estimate computed here, in log1p units, from the stored cells:
    ``(c, est, info)``."""
    tk = model.tokenizer
    pool = ["A", "B", "C"]
    C = np.stack([_log1p_group_mean(model, "ctrl", t).mean(0).numpy() for t in pool])
    E = np.stack([_log1p_group_mean(model, "G1", t).mean(0).numpy() for t in pool]) - C
    ctrl_cells = np.concatenate([_log1p_group_mean(model, "ctrl", t).numpy() for t in pool])
    src = model.encode(source).double()
    c = (src.reshape(len(src), -1)[:, :tk.n_genes] * tk.std.double()
         + tk.mean.double()).mean(0).numpy()
    est, info = context_effect(E, C, c, ctrl_cells)
    return c, est, info


def test_held_out_context_is_anchored_to_the_loco_estimate(context_data):
    model, source = context_data
    src_tokens = model.encode(source)
    cov = pd.DataFrame({"cell_type": ["D"] * source.n_obs})

    def gen(effects):
        return torch.as_tensor(model.sample("G1", source.n_obs, covariates=cov, output="tokens",
                                            seed=3, source_tokens=src_tokens, effects=effects))

    plain, default = gen("none"), gen("auto")
    assert_constant_shift(default, plain)
    c, est, info = _independent_estimate(model, source)
    target = torch.as_tensor(c + est).clamp_min(0.0)
    torch.testing.assert_close(decoded_mean(model, default), target, atol=1e-4, rtol=0)
    assert (decoded_mean(model, plain) - target).abs().max() > 1e-2
    report = model.predict("G1", source=source, seed=0).uns["scdit"]["context_estimator"]
    assert report["G1 | D"]["method"] == info["method"]
    # "always" is the same as the default here
    torch.testing.assert_close(gen("always"), default)


def test_held_out_context_pool_and_default(context_data, tmp_path):
    model, source = context_data
    assert model.targets.plan.table.pool("G1", exclude=("D",)) == [("A",), ("B",), ("C",)]
    # a seen context gets the training mean; the held-out one the held-out-context estimate
    seen = model.predict("G1", n_cells=10, covariates={"cell_type": "A"}, seed=0)
    assert seen.uns["scdit"]["mean_set_by"] == {"G1 | A": "seen"}
    out = model.predict("G1", source=source, seed=0)
    assert out.uns["scdit"]["effects"] == "auto"
    report = out.uns["scdit"]["context_estimator"]["G1 | D"]
    assert out.uns["scdit"]["mean_set_by"] == {"G1 | D": f"context:{report['method']}"}
    assert report["method"] == _independent_estimate(model, source)[2]["method"]
    assert report["n_contexts"] == 3
    assert report["loco_pearson"] >= report["loco_pearson_mean_shift"]
    out.write_h5ad(tmp_path / "pred.h5ad")  # the report is h5ad-serialisable
    alone = model.predict("G1", source=source, seed=0, effects="none").uns["scdit"]
    assert "context_estimator" not in alone and alone["mean_set_by"] == {"G1": "generator"}


def test_held_out_context_anchors_the_genes_outside_the_model(context_data):
    """Unmodelled genes (carried over from the source cells) get the same estimator's effect:
    computed here from the stored cells with the chosen weights and slope."""
    model, source = context_data
    cols = np.setdiff1d(np.arange(model.var_names.size), model.gene_index)
    assert len(cols) == 10
    out = model.predict("G1", source=source, seed=0, representation="log1p")
    info = _independent_estimate(model, source)[2]
    ref = model.reference

    def log1p(cells):
        X = cells.X.toarray() if hasattr(cells.X, "toarray") else np.asarray(cells.X)
        return np.log1p(X[:, cols] / X.sum(1, keepdims=True) * 1e4)

    def group(label, t):
        return log1p(ref[((ref.obs.condition == label) & (ref.obs.cell_type == t)).to_numpy()]
                     ).mean(0)

    C = np.stack([group("ctrl", t) for t in "ABC"])
    E = np.stack([group("G1", t) for t in "ABC"]) - C
    c = log1p(source).mean(0)  # the source cells are the context's controls
    target = np.maximum(c + info["weights"] @ E + info["slope"] * (c - C.mean(0)), 0)
    X = out.X.toarray()
    np.testing.assert_allclose(X[:, cols].mean(0), target, atol=1e-4)
    plain = model.predict("G1", source=source, seed=0, representation="log1p",
                          effects="none", sampling=scdit.SamplingConfig(unmodelled_genes="carry"))
    np.testing.assert_allclose(plain.X.toarray()[:, cols], log1p(source), atol=1e-5)


def test_held_out_context_effect_is_projected_onto_the_training_axes(context_data, monkeypatch):
    """With a basis (rank 3 here; the fixture's 50 genes are fewer than the default rank), the
    anchored means of all genes, modelled and not, are the control mean plus the estimate
    projected onto the top axes of the stored cells' log1p expression."""
    model, source = context_data
    monkeypatch.setattr(model.targets, "rank", 3)
    out = model.predict("G1", source=source, seed=0, representation="log1p")
    info = _independent_estimate(model, source)[2]
    assert out.uns["scdit"]["context_estimator"]["G1 | D"]["effect_rank"] == 3
    ref = model.reference

    def log1p(cells):
        X = cells.X.toarray() if hasattr(cells.X, "toarray") else np.asarray(cells.X)
        return np.log1p(X / X.sum(1, keepdims=True) * 1e4)

    def group(label, t):
        return log1p(ref[((ref.obs.condition == label) & (ref.obs.cell_type == t)).to_numpy()]
                     ).mean(0)

    C = np.stack([group("ctrl", t) for t in "ABC"])
    E = np.stack([group("G1", t) for t in "ABC"]) - C
    c = log1p(source).mean(0)
    all_ = log1p(ref)
    V = np.linalg.svd(all_ - all_.mean(0), full_matrices=False)[2][:3].T
    delta = info["weights"] @ E + info["slope"] * (c - C.mean(0))
    target = np.maximum(c + V @ (V.T @ delta), 0)
    got = out.X.toarray().mean(0)
    np.testing.assert_allclose(got, target, atol=2e-3)
    raw = np.maximum(c + delta, 0)
    assert np.abs(raw - target).max() > 0.05  # the projection changed the anchor


def test_anchored_mean_does_not_depend_on_resampling_the_source(context_data):
    """The anchor's control mean is that of all the given source cells: predicting more cells
    than there are sources (each source used once, the remainder drawn without replacement)
    gives the same output mean, for modelled and unmodelled genes alike."""
    model, source = context_data
    m = source.n_obs
    same = model.predict("G1", source=source, seed=0, representation="log1p")
    more = model.predict("G1", n_cells=m + 7, source=source, seed=1, representation="log1p")
    refs = more.obs["reference_cell"].value_counts()
    assert len(refs) == m and set(refs) == {1, 2} and (refs == 2).sum() == 7
    np.testing.assert_allclose(more.X.toarray().mean(0), same.X.toarray().mean(0), atol=1e-4)


def test_seen_guidance_scale_is_not_applied_to_a_held_out_context(context_data):
    model, source = context_data
    gen = model.generator
    old = gen.seen_scale
    try:
        gen.seen_scale = 1.5  # as if the fit had chosen it on the training contexts
        held = model.predict("G1", source=source, seed=0, verbose=False)
        assert held.uns["scdit"]["guidance"] == {}  # type D never had G1: scale 1
        seen_ctx = model.predict("G1", n_cells=8, covariates={"cell_type": "A"}, seed=0,
                                 verbose=False)
        assert seen_ctx.uns["scdit"]["guidance"] == {"G1": 1.5}
    finally:
        gen.seen_scale = old
