"""fit and predict never modify the user's AnnData."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import scdit


def _rich_adata(make_adata):
    adata = make_adata()
    adata.obs["condition"] = pd.Categorical(adata.obs["condition"])
    adata.obs["cell_type"] = pd.Categorical(adata.obs["cell_type"])
    adata.obs["score"] = np.arange(adata.n_obs, dtype=float)
    adata.var["gene_symbol"] = [f"sym{i}" for i in range(adata.n_vars)]
    adata.layers["counts"] = sp.csr_matrix(adata.X)
    adata.X = sp.csr_matrix(adata.X)
    adata.uns["note"] = {"kept": np.array([1, 2, 3]), "name": "mine"}
    adata.obsm["X_pca"] = np.ones((adata.n_obs, 2))
    return adata


def _assert_same(a: ad.AnnData, b: ad.AnnData) -> None:
    assert (a.X != b.X).nnz == 0 and a.X.dtype == b.X.dtype and type(a.X) is type(b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert a.uns.keys() == b.uns.keys() and a.uns["note"]["name"] == b.uns["note"]["name"]
    assert np.array_equal(a.uns["note"]["kept"], b.uns["note"]["kept"])
    assert a.layers.keys() == b.layers.keys()
    for k in a.layers:
        assert (a.layers[k] != b.layers[k]).nnz == 0
    assert a.obsm.keys() == b.obsm.keys() and np.array_equal(a.obsm["X_pca"], b.obsm["X_pca"])


def test_fit_and_predict_never_modify_user_data(make_adata, tiny):
    adata = _rich_adata(make_adata)
    snapshot = copy.deepcopy(adata)
    model = scdit.fit(adata, "condition", covariate_keys=["cell_type"], layer="counts",
                      tokenizer=scdit.TokenizerConfig(n_top_genes=30), max_steps=3, **tiny)
    _assert_same(adata, snapshot)
    source = adata[adata.obs["condition"] == "ctrl"]  # a view, as users often pass
    source_snapshot = source.copy()
    model.predict("G1", source=source, layer="counts", n_cells=40, seed=0)
    model.predict(["G2", "G1+G2"], n_cells=10, covariates={"cell_type": "T"}, seed=0)
    _assert_same(adata, snapshot)
    _assert_same(source.copy(), source_snapshot)
    assert source.is_view


def test_log1p_dense_input_not_modified(make_adata, tiny):
    """Dense float32 log1p input can flow through without copies: it must still be untouched."""
    from scdit.data import counts_to_log1p

    adata = make_adata()
    adata.X = counts_to_log1p(adata.X)
    before = adata.X.copy()
    model = scdit.fit(adata, "condition", max_steps=3, **tiny)
    model.predict("G1", source=adata[:20], seed=0)
    assert np.array_equal(adata.X, before)
