"""Held-out covariate contexts: the LOCO-chosen effect estimator and predict's use of it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import scdit
from scdit.effects import (
    apply_effect,
    candidates,
    context_effect,
    expression_basis,
    loco_scores,
    pc_coordinates,
    project_effect,
)
from tests.effects.helpers import assert_constant_shift, decoded_mean
from tests.helpers import TINY, make_counts_adata


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
    # a seen context keeps the generator alone; the held-out one gets the estimate
    seen = model.predict("G1", n_cells=10, covariates={"cell_type": "A"}, seed=0)
    assert seen.uns["scdit"]["mean_set_by"] == {"G1": "generator"}
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
                          effects="none")
    np.testing.assert_allclose(plain.X.toarray()[:, cols], log1p(source), atol=1e-5)


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
