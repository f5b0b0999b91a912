"""``SamplingConfig(invert=True)``: a noise-source model starts each cell from its inverted
reference cell (the control flow run backwards), then integrates the perturbation's flow."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import scdit
from tests.helpers import dense

INVERT = scdit.SamplingConfig(invert=True)


def _controls(adata, key="condition", n=40):
    return adata[adata.obs[key] == "ctrl"][:n].copy()


def test_control_comes_back_as_its_source_cells(log1p_model, log1p_adata):
    """The round trip through the control flow is the identity up to the solver's error, so the
    counterfactual of a control cell under "control" is the cell itself; from noise it is not."""
    src = _controls(log1p_adata)
    inv = log1p_model.predict("ctrl", source=src, effects="none", sampling=INVERT,
                              seed=0, verbose=False)
    plain = log1p_model.predict("ctrl", source=src, effects="none", seed=0, verbose=False)
    assert list(inv.obs["reference_cell"]) == list(src.obs_names)  # cell i from source cell i
    err_inv = np.abs(dense(inv.X) - dense(src.X)).mean()
    err_plain = np.abs(dense(plain.X) - dense(src.X)).mean()
    assert err_inv < 0.05 * err_plain
    assert err_inv < 0.05
    assert inv.uns["scdit"]["mean_set_by"] == {"ctrl": "generator"}


def test_inverted_cells_follow_their_source_cells(log1p_model, log1p_adata):
    """A perturbation's counterfactual cells keep their source cells' individuality: each is
    closer to its own source cell than to the other source cells, on average."""
    src = _controls(log1p_adata)
    out = log1p_model.predict("G1", source=src, effects="none", sampling=INVERT, seed=0,
                              verbose=False)
    X, S = dense(out.X), dense(src.X)
    d = ((X[:, None, :] - S[None, :, :]) ** 2).sum(-1)  # (cells, sources)
    own = np.diag(d)
    others = (d.sum(1) - own) / (len(S) - 1)
    assert (own < others).mean() > 0.9


def test_inversion_is_deterministic_and_needs_no_noise(counts_model, counts_adata):
    """Given the same reference cells, the cells do not depend on the noise seed; counts out."""
    src = _controls(counts_adata)
    a = counts_model.predict("G1", source=src, effects="none", sampling=INVERT, seed=0,
                             representation="log1p", verbose=False)
    b = counts_model.predict("G1", source=src, effects="none", sampling=INVERT, seed=7,
                             representation="log1p", verbose=False)
    np.testing.assert_allclose(dense(a.X), dense(b.X), atol=1e-5)
    assert a.uns["scdit"]["invert"] is True
    plain = [counts_model.predict("G1", source=src, effects="none", seed=s,
                                  representation="log1p", verbose=False) for s in (0, 7)]
    assert not np.allclose(dense(plain[0].X), dense(plain[1].X))  # from noise: seed matters
    assert plain[0].uns["scdit"]["invert"] == "auto"  # the default, which inverts no label here
    assert plain[0].uns["scdit"]["inverted"] == []
    X = dense(counts_model.predict("G1", source=src, effects="none", sampling=INVERT, seed=0,
                                   verbose=False).X)
    assert np.all(X >= 0) and np.all(X == np.round(X))
    tok = counts_model.sample("G1", len(src), covariates=src.obs[["cell_type"]].reset_index(
        drop=True), source_tokens=counts_model.encode(src), effects="none", sampling=INVERT,
        seed=1, output="tokens", verbose=False)
    tok2 = counts_model.sample("G1", len(src), covariates=src.obs[["cell_type"]].reset_index(
        drop=True), source_tokens=counts_model.encode(src), effects="none", sampling=INVERT,
        seed=2, output="tokens", verbose=False)
    np.testing.assert_array_equal(tok, tok2)


def test_effect_estimate_still_sets_the_mean(log1p_model, log1p_adata):
    """With ``effects="auto"`` a seen perturbation's mean is still its training mean."""
    src = _controls(log1p_adata)
    out = log1p_model.predict("G1", source=src, sampling=INVERT, seed=0, verbose=False)
    assert out.uns["scdit"]["mean_set_by"]["G1"] != "generator"


def test_invert_refused_for_control_source_models(counts_adata, tiny):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=5, seed=0, **tiny)
    with pytest.raises(ValueError, match="invert=True.*is for models that generate from noise"):
        model.predict("G1", covariates={"cell_type": "T"}, sampling=INVERT, verbose=False)
    # the default (None) is fine
    model.predict("G1", n_cells=5, covariates={"cell_type": "T"}, verbose=False)


def test_repeated_reference_cells_warn(log1p_model, log1p_adata):
    src = _controls(log1p_adata, n=10)
    with pytest.warns(UserWarning, match="repeats reference cells of 'G1'"):
        out = log1p_model.predict("G1", n_cells=15, source=src, effects="none",
                                  sampling=INVERT, seed=0, verbose=False)
    refs = out.obs["reference_cell"].to_numpy()
    X = dense(out.X)
    first = {r: i for i, r in enumerate(refs)}
    dup = [i for i, r in enumerate(refs) if first[r] != i]
    assert dup and all(np.allclose(X[i], X[first[refs[i]]], atol=1e-5) for i in dup)


def test_auto_inverts_seen_perturbations_predicted_from_source_cells(log1p_model, log1p_adata):
    """The default (``invert=None``): a seen perturbation whose training mean sets its mean,
    predicted one cell per given source cell, gets the source cells' counterfactuals — the
    cells of ``invert=True`` whatever the noise seed; unseen combinations (additive estimate)
    keep their noise starts, in the same call (batches do not mix the two)."""
    src = _controls(log1p_adata)
    both = log1p_model.predict(["G1", "G2+G3"], source=src, seed=0, verbose=False)
    assert both.uns["scdit"]["invert"] == "auto" and both.uns["scdit"]["inverted"] == ["G1"]
    g1 = dense(both[both.obs["condition"] == "G1"].X)
    forced = log1p_model.predict("G1", source=src, sampling=INVERT, seed=5, verbose=False)
    np.testing.assert_allclose(g1, dense(forced.X), atol=1e-5)
    combo = log1p_model.predict("G2+G3", source=src, seed=0, verbose=False)
    np.testing.assert_allclose(dense(both[both.obs["condition"] == "G2+G3"].X),
                               dense(combo.X), atol=1e-5)
    assert combo.uns["scdit"]["inverted"] == []
    other_seed = log1p_model.predict("G2+G3", source=src, seed=1, verbose=False)
    assert not np.allclose(dense(combo.X), dense(other_seed.X))  # noise starts


def test_inverted_and_noise_starts_never_share_a_batch(log1p_model, log1p_adata):
    """Jobs that may share batches (joint conditions) but start differently: the auto-inverted
    seen label and an unseen combination at compose=0 (its joint condition), in one batch of
    cells, give each label's own cells."""
    src = _controls(log1p_adata)
    s = scdit.SamplingConfig(compose=0.0, batch_size=512)
    both = log1p_model.predict(["G1", "G2+G3"], source=src, sampling=s, seed=0, verbose=False)
    assert both.uns["scdit"]["inverted"] == ["G1"]
    for label in ("G1", "G2+G3"):
        alone = log1p_model.predict(label, source=src, sampling=s, seed=0, verbose=False)
        np.testing.assert_allclose(dense(both[both.obs["condition"] == label].X),
                                   dense(alone.X), atol=1e-5)


def test_reflowed_models_keep_noise_starts(log1p_model, log1p_adata):
    """Inversion through a reflowed (straightened, few-step) model was not measured: the
    automatic choice leaves it off there."""
    fast = scdit.reflow(log1p_model, n_pairs=64, max_steps=2, verbose=False)
    out = fast.predict("G1", source=_controls(log1p_adata), seed=0, verbose=False)
    assert out.uns["scdit"]["inverted"] == []


@pytest.mark.parametrize("kwargs", [
    {"n_cells": 50},  # more cells than source cells: inverted repeats would be copies
    {"effects": "none"},  # the generator sets the mean
    {"sampling": scdit.SamplingConfig(invert=False)},
], ids=["repeats", "generator-mean", "invert-false"])
def test_auto_keeps_noise_starts_elsewhere(log1p_model, log1p_adata, kwargs):
    kw = {"source": _controls(log1p_adata), **kwargs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = log1p_model.predict("G1", seed=0, verbose=False, **kw)
    assert not [w for w in caught if "repeats reference cells" in str(w.message)]
    assert a.uns["scdit"]["inverted"] == []
    b = log1p_model.predict("G1", seed=1, verbose=False, **kw)
    assert not np.allclose(dense(a.X), dense(b.X))


def test_invert_checked():
    with pytest.raises(TypeError, match="invert must be True, False or None"):
        scdit.SamplingConfig(invert="yes")


def test_auto_inverts_seen_perturbations_without_source(counts_model):
    """Without source cells a seen perturbation keeps its own stored cells as reference cells
    (library sizes, unmodelled genes) and starts from distinct stored control cells of each
    cell's context, inverted; noise starts where the context has too few stored control
    cells, or where no estimate sets the mean."""
    stored = counts_model.cells.reference.obs
    out = counts_model.predict("G1", n_cells=12, covariates={"cell_type": "T"}, seed=0,
                               verbose=False)
    assert out.uns["scdit"]["inverted"] == ["G1"]
    own = stored.loc[out.obs["reference_cell"]]
    assert (own["condition"] == "G1").all() and (own["cell_type"] == "T").all()
    mixed = counts_model.predict("G1", n_cells=12, seed=0, verbose=False)  # both contexts
    assert mixed.uns["scdit"]["inverted"] == ["G1"]
    n_ctrl = int(((stored["condition"] == "ctrl") & (stored["cell_type"] == "T")).sum())
    many = counts_model.predict("G1", n_cells=n_ctrl + 1, covariates={"cell_type": "T"},
                                seed=0, verbose=False)
    assert many.uns["scdit"]["inverted"] == []
    gen = counts_model.predict("G1", n_cells=12, effects="none", seed=0, verbose=False)
    assert gen.uns["scdit"]["inverted"] == []
    other = counts_model.predict("G1", n_cells=12, covariates={"cell_type": "T"}, seed=1,
                                 verbose=False)
    assert not np.array_equal(dense(out.X), dense(other.X))  # the seed draws the cells
    assert "depth_factor" not in out.uns["scdit"]  # its own cells' library sizes, factor 1
    ctrl = counts_model.predict("ctrl", n_cells=5, seed=0, verbose=False)
    assert ctrl.uns["scdit"]["inverted"] == []  # the control label is not paired
    # the pairing itself: per row a distinct stored control cell of the row's context
    ref = counts_model.cells.reference_cells("G1", None, 30, None, np.random.default_rng(0))
    start = ref.start
    assert start is not None and len(set(start.rows)) == 30
    assert (stored["condition"].to_numpy()[start.rows] == "ctrl").all()
    np.testing.assert_array_equal(stored["cell_type"].to_numpy()[start.rows],
                                  ref.obs["cell_type"].to_numpy())
    assert counts_model.cells.reference_cells("ctrl", None, 5, None,
                                              np.random.default_rng(0)).start is None
