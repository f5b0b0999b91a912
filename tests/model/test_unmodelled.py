"""Genes outside the model where the generator sets the mean: decoded from the generated genes
(``SamplingConfig(unmodelled_genes="decode")``, the default) or carried over."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import scdit
from scdit.model import DECODER_RIDGE, GeneDecoder
from tests.helpers import dense

CARRY = scdit.SamplingConfig(unmodelled_genes="carry")


def test_gene_decoder_recovers_a_linear_map():
    """Unmodelled genes that are a linear function of the modelled genes' top components are
    decoded exactly (up to the small ridge), from a sparse matrix as from a dense one."""
    rng = np.random.default_rng(0)
    n, m, k, u = 400, 30, 4, 12
    Z = rng.normal(size=(n, k)) @ rng.normal(size=(k, m)) * 3  # rank k
    A = rng.normal(size=(m, u))
    U = Z @ A + 5.0  # an offset: the fit centres
    dec = GeneDecoder.fit(Z, sp.csr_matrix(U), rank=k, ridge=1e-9)
    assert dec.axes.shape == (m, k) and dec.coef.shape == (k, u)
    delta = Z[:5] - Z[5:10]
    np.testing.assert_allclose(dec(delta), delta @ A, rtol=1e-3, atol=1e-3)
    dense_fit = GeneDecoder.fit(Z, U, rank=k, ridge=1e-9)
    np.testing.assert_allclose(dense_fit(delta), dec(delta), rtol=1e-8, atol=1e-8)
    # the ridge shrinks the map towards zero, never flips it
    shrunk = GeneDecoder.fit(Z, U, rank=k, ridge=10.0)(delta)
    assert np.abs(shrunk).sum() < np.abs(delta @ A).sum() and (shrunk * (delta @ A)).sum() > 0


def test_gene_decoder_without_anything_to_learn():
    rng = np.random.default_rng(1)
    assert GeneDecoder.fit(rng.normal(size=(2, 5)), np.ones((2, 3))) is None  # < 3 cells
    assert GeneDecoder.fit(np.ones((10, 5)), rng.normal(size=(10, 3))) is None  # no variation
    assert GeneDecoder.fit(rng.normal(size=(10, 5)), np.ones((10, 0))) is None  # no genes
    # fewer modelled genes than the rank: regressed on all of them
    dec = GeneDecoder.fit(rng.normal(size=(50, 5)), rng.normal(size=(50, 3)), rank=50)
    assert dec.axes.shape == (5, 5)


def _log1p(cells, cols):
    X = dense(cells.X)
    return np.log1p(X[:, cols] / X.sum(1, keepdims=True) * 1e4)


def test_generator_alone_decodes_the_genes_outside_the_model(counts_model, counts_adata):
    """Predicted from control cells, the generator alone's unmodelled genes have the source
    cells' mean plus the decoded change of the generated genes' mean; the decoder recomputed
    here with numpy from the stored cells (the model's reference cells fewer than 3,000)."""
    model = counts_model
    mod = model.var_names.get_indexer(list(model.tokenizer.genes))
    un = np.setdiff1d(np.arange(model.var_names.size), mod)
    source = counts_adata[(counts_adata.obs["condition"] == "ctrl").to_numpy()][:60].copy()
    source = source[(source.obs["cell_type"] == "T").to_numpy()].copy()
    out = model.predict("G2", source=source, seed=0, effects="none", representation="log1p")
    assert out.uns["scdit"]["unmodelled_genes"] == "decode"
    assert out.uns["scdit"]["mean_set_by"] == {"G2": "generator"}
    # the decoder, independently: ridge on the top components of the stored cells
    ref = model.reference
    assert ref.n_obs <= scdit.model.DECODER_CELLS
    Z, U = _log1p(ref, mod), _log1p(ref, un)
    Zc = Z - Z.mean(0)
    _, s, vt = np.linalg.svd(Zc, full_matrices=False)
    S = Zc @ vt.T  # all 30 components: fewer genes than the rank
    gram = S.T @ S
    coef = np.linalg.solve(gram + DECODER_RIDGE * np.linalg.eigvalsh(gram)[-1] * np.eye(len(gram)),
                           S.T @ (U - U.mean(0)))
    X = dense(out.X)
    change = ((X[:, mod].mean(0) - _log1p(source, mod).mean(0)) @ vt.T) @ coef
    target = np.maximum(_log1p(source, un).mean(0) + change, 0)
    assert np.abs(change).max() > 0.01  # the generated genes moved, and so do these
    np.testing.assert_allclose(X[:, un].mean(0), target, atol=1e-4)
    # carried over instead: the source cells' own values
    carried = model.predict("G2", source=source, seed=0, effects="none", representation="log1p",
                            sampling=CARRY)
    assert carried.uns["scdit"]["unmodelled_genes"] == "carry"
    np.testing.assert_allclose(dense(carried.X)[:, un], _log1p(source, un), atol=1e-5)
    np.testing.assert_allclose(dense(carried.X)[:, mod], X[:, mod], atol=1e-6)


def test_estimates_still_set_the_genes_outside_the_model(counts_model):
    """Where an estimate sets the mean (a seen label, the default), decoding changes nothing."""
    a = counts_model.predict("G1", n_cells=30, seed=2)
    b = counts_model.predict("G1", n_cells=30, seed=2, sampling=CARRY)
    assert set(a.uns["scdit"]["mean_set_by"].values()) == {"seen"}
    np.testing.assert_array_equal(dense(a.X), dense(b.X))


def test_a_model_of_every_gene_has_nothing_to_decode(log1p_model):
    a = log1p_model.predict("G3", n_cells=20, seed=1, effects="none")
    b = log1p_model.predict("G3", n_cells=20, seed=1, effects="none", sampling=CARRY)
    np.testing.assert_array_equal(dense(a.X), dense(b.X))


def test_unknown_unmodelled_genes_value():
    with pytest.raises(ValueError, match=r"unmodelled_genes = 'copy'.*'decode', 'carry'"):
        scdit.SamplingConfig(unmodelled_genes="copy")


@pytest.mark.parametrize("tokenizer", ["genes", "pca", "scvi"])
def test_nothing_generated_means_nothing_decoded(make_adata, tiny, tokenizer):
    """Tokens equal to the reference cells' own encoding decode to no change of the genes
    outside the model, whatever the tokenizer's decoding does to the data (a PCA's
    reconstruction, scVI's denoised means with a batch column are not the data): every
    context's shift is 0."""
    opts = {"pca": {"n_components": 8},
            "scvi": {"n_latent": 6, "max_epochs": 3, "batch_key": "cell_type"}}.get(tokenizer, {})
    model = scdit.fit(make_adata(), "condition", covariate_keys=["cell_type"], max_steps=3,
                      tokenizer=scdit.TokenizerConfig(kind=tokenizer, n_top_genes=30, **opts),
                      **tiny)
    rng = np.random.default_rng(0)
    ref = model.cells.reference_cells("G1", None, 40, None, rng)
    tokens = model.encode(ref)
    anchor = model.targets.decoded_anchor(ref, tokens, "log1p", rng)
    assert anchor is not None and len(anchor.cols) == 20
    np.testing.assert_allclose(anchor.shifts, 0, atol=1e-5)
    moved = model.targets.decoded_anchor(ref, tokens + 0.5, "log1p", rng)
    assert np.abs(moved.shifts).max() > 1e-3


def test_decoding_without_covariates(make_adata, tiny):
    """A model without covariates (one context) decodes too, from given source cells."""
    adata = make_adata()
    model = scdit.fit(adata, "condition", max_steps=3,
                      tokenizer=scdit.TokenizerConfig(n_top_genes=30), **tiny)
    source = adata[(adata.obs["condition"] == "ctrl").to_numpy()][:30].copy()
    out = model.predict("G1", source=source, seed=0, effects="none", representation="log1p")
    carried = model.predict("G1", source=source, seed=0, effects="none", representation="log1p",
                            sampling=CARRY)
    un = np.flatnonzero(~np.isin(np.asarray(model.var_names), list(model.tokenizer.genes)))
    np.testing.assert_allclose(dense(carried.X)[:, un], _log1p(source, un), atol=1e-5)
    assert np.abs(dense(out.X)[:, un].mean(0) - dense(carried.X)[:, un].mean(0)).max() > 1e-3


def test_target_prior_genes_are_not_decoded(make_adata, tiny):
    """An unseen target outside the model (target marks off) gets the target prior alone: its
    column is the same whether the other unmodelled genes are decoded or carried."""
    adata = make_adata()
    train = adata[(adata.obs["condition"] != "G3").to_numpy()].copy()
    model = scdit.fit(train, "condition", max_steps=5, seed=0, conditions={"target_marks": False},
                      tokenizer=scdit.TokenizerConfig(n_top_genes=10), **tiny)
    assert "G3" not in model.tokenizer.genes and "G3" in model.vocab.featured
    ctrl = train[(train.obs["condition"] == "ctrl").to_numpy()].copy()
    kw = dict(source=ctrl, seed=0, representation="log1p")
    decoded, carried = model.predict("G3", **kw), model.predict("G3", sampling=CARRY, **kw)
    j = list(train.var_names).index("G3")
    np.testing.assert_allclose(dense(decoded.X)[:, j], dense(carried.X)[:, j], atol=1e-5)
    assert dense(decoded.X)[:, j].mean() < 0.8 * _log1p(ctrl, [j]).mean()  # knocked down
    others = np.setdiff1d(np.flatnonzero(~np.isin(np.asarray(model.var_names),
                                                   list(model.tokenizer.genes))), [j])
    assert not np.array_equal(dense(decoded.X)[:, others], dense(carried.X)[:, others])
