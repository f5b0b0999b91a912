"""Bad input gives clear errors (checked by message), and user data is never modified."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdit

# ---------------------------------------------------------------- fit: keys and labels


def test_missing_condition_key(counts_adata):
    with pytest.raises(KeyError, match=r"condition_key='perturbation' is not a column.*'condition'"):
        scdit.fit(counts_adata, "perturbation", preset="tiny", verbose=False)


def test_missing_covariate_key(counts_adata):
    with pytest.raises(KeyError, match=r"covariate key 'donor' is not a column"):
        scdit.fit(counts_adata, "condition", covariate_keys=["donor"], preset="tiny",
                  verbose=False)


def test_no_control_cells_lists_labels_and_suggests_control(counts_adata):
    counts_adata.obs["condition"] = counts_adata.obs["condition"].replace("ctrl", "untreated")
    with pytest.raises(ValueError, match=r"No control cells") as err:
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False)
    msg = str(err.value)
    assert "'untreated'" in msg and "'G1+G2'" in msg and "control=" in msg
    # control given explicitly but absent
    with pytest.raises(ValueError, match=r"control='ctrl' does not occur.*'untreated'.*control="):
        scdit.fit(counts_adata, "condition", control="ctrl", preset="tiny", verbose=False)


def test_explicit_control_label_is_used(counts_adata, tiny):
    counts_adata.obs["condition"] = counts_adata.obs["condition"].replace("ctrl", "untreated")
    model = scdit.fit(counts_adata, "condition", control="untreated", max_steps=2, **tiny)
    assert model.vocab.control == "untreated" and "untreated" not in model.vocab.atoms


def test_only_control_cells(counts_adata):
    only = counts_adata[counts_adata.obs["condition"] == "ctrl"].copy()
    with pytest.raises(ValueError, match="Only control cells"):
        scdit.fit(only, "condition", preset="tiny", verbose=False)


def test_non_string_labels(counts_adata):
    codes = {"ctrl": 0, "G1": 1, "G2": 2, "G3": 3, "G1+G2": 4}
    counts_adata.obs["condition"] = counts_adata.obs["condition"].map(codes).astype(int)
    with pytest.raises(TypeError, match=r"must hold string labels, found int.*astype\(str\)"):
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False)


def test_missing_labels(counts_adata):
    counts_adata.obs.loc[counts_adata.obs_names[:3], "condition"] = np.nan
    with pytest.raises(ValueError, match=r"has 3 missing \(NaN\) labels"):
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False)


def test_few_cells_warns(counts_adata, tiny):
    keep = np.r_[np.flatnonzero(counts_adata.obs["condition"] != "G3"),
                 np.flatnonzero(counts_adata.obs["condition"] == "G3")[:4]]
    small = counts_adata[np.sort(keep)].copy()
    with pytest.warns(UserWarning, match=r"1 condition\(s\) have fewer than 10 cells \('G3': 4\)"):
        scdit.fit(small, "condition", max_steps=2, **tiny)


# ---------------------------------------------------------------- fit: matrix content
def test_empty_anndata():
    empty = ad.AnnData(np.zeros((0, 5), np.float32), obs=pd.DataFrame({"condition": []}))
    with pytest.raises(ValueError, match=r"AnnData is empty \(0 cells × 5 genes\)"):
        scdit.fit(empty, "condition", preset="tiny", verbose=False)
    no_genes = ad.AnnData(np.zeros((3, 0), np.float32),
                          obs=pd.DataFrame({"condition": ["ctrl", "A", "A"]}, index=list("abc")))
    with pytest.raises(ValueError, match="empty"):
        scdit.fit(no_genes, "condition", preset="tiny", verbose=False)


def test_nan_inf_negative_values_are_counted(counts_adata):
    X = counts_adata.X.copy()
    X[0, 0] = X[1, 1] = np.nan
    X[2, 2] = np.inf
    X[3, 3] = X[4, 4] = X[5, 5] = -1.0
    counts_adata.X = X
    with pytest.raises(ValueError, match=r"adata.X holds 2 NaN, 1 infinite and 3 negative values "
                                         r"\(first at cell 0, gene 0\)"):
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False)


def test_bad_values_in_sparse_layer(counts_adata):
    bad = sp.csr_matrix(counts_adata.X)
    bad.data[5] = -2.0
    counts_adata.layers["raw"] = bad
    with pytest.raises(ValueError, match=r"adata.layers\['raw'\] holds 0 NaN, 0 infinite and 1 "
                                         r"negative"):
        scdit.fit(counts_adata, "condition", layer="raw", preset="tiny", verbose=False)


def test_unknown_layer(counts_adata):
    counts_adata.layers["counts"] = counts_adata.X.copy()
    with pytest.raises(KeyError, match=r"Layer 'raw' not found; available layers: \['counts'\]"):
        scdit.fit(counts_adata, "condition", layer="raw", preset="tiny", verbose=False)


def test_log1p_data_with_counts_representation(log1p_adata):
    with pytest.raises(ValueError, match=r"Raw counts are required.*non-integer.*layer='counts'"):
        scdit.fit(log1p_adata, "condition", representation="counts", preset="tiny",
                  verbose=False)


def test_invalid_representation_and_options(counts_adata):
    with pytest.raises(ValueError, match="representation must be 'counts', 'log1p' or None"):
        scdit.fit(counts_adata, "condition", representation="raw", preset="tiny", verbose=False)
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        scdit.fit(counts_adata, "condition", preset="huge", verbose=False)
    with pytest.raises(ValueError, match="Unknown tokenizer 'nope'"):
        scdit.fit(counts_adata, "condition", tokenizer="nope", preset="tiny", verbose=False)


def test_duplicate_gene_names(counts_adata):
    names = counts_adata.var_names.tolist()
    names[3] = names[2]
    counts_adata.var_names = names
    with pytest.raises(ValueError, match=r"Gene names are not unique \(e.g. \['G2'\]\)"):
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False)


def test_not_an_anndata(counts_adata):
    with pytest.raises(TypeError, match="Expected an AnnData object, got DataFrame"):
        scdit.fit(counts_adata.to_df(), "condition", preset="tiny", verbose=False)


# ---------------------------------------------------------------- predict
def test_unknown_perturbation_at_predict(counts_model):
    # G9 is a measured gene: predictable through the data-derived features; XYZ is not
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['XYZ'\].*feature table"):
        counts_model.predict(["G1", "XYZ+G1", "G9"], n_cells=5, seed=0)


def test_unknown_covariate_value_at_predict(counts_model, counts_adata):
    with pytest.raises(KeyError, match=r"Unknown value\(s\) \['NK'\] for covariate 'cell_type'.*"
                                       r"'B', 'T'"):
        counts_model.predict("G1", n_cells=5, covariates={"cell_type": "NK"}, seed=0)
    src = counts_adata[:10].copy()
    src.obs["cell_type"] = "NK"
    with pytest.raises(KeyError, match=r"Unknown value\(s\) \['NK'\]"):
        counts_model.predict("G1", source=src, seed=0)
    with pytest.raises(KeyError, match=r"covariate.*\['donor'\].*\['cell_type'\]"):
        counts_model.predict("G1", n_cells=5, covariates={"donor": "d1"}, seed=0)
    del src.obs["cell_type"]
    with pytest.raises(KeyError, match=r"source.obs lacks covariate column\(s\) \['cell_type'\]"):
        counts_model.predict("G1", source=src, seed=0)


def test_source_with_different_genes(counts_model, counts_adata):
    src = counts_adata[:10, 5:].copy()
    with pytest.raises(ValueError, match=r"source has different genes: 5 training gene\(s\) are "
                                         r"missing \(e.g. \['G0'"):
        counts_model.predict("G1", source=src, seed=0)


def test_source_in_wrong_representation(counts_model, log1p_adata):
    with pytest.raises(ValueError, match="source holds log1p but the model was trained on counts"):
        counts_model.predict("G1", source=log1p_adata[:10].copy(), seed=0)


def test_bad_predict_arguments(counts_model, counts_adata):
    with pytest.raises(ValueError, match="perturbations is empty"):
        counts_model.predict([], seed=0)
    with pytest.raises(ValueError, match="n_cells must be a positive integer"):
        counts_model.predict("G1", n_cells=0, seed=0)
    with pytest.raises(ValueError, match="source has no cells"):
        counts_model.predict("G1", source=counts_adata[:0].copy(), seed=0)


# ---------------------------------------------------------------- user data is never modified
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
                      n_top_genes=30, max_steps=3, **tiny)
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
    from scdit.data._representation import counts_to_log1p

    adata = make_adata()
    adata.X = counts_to_log1p(adata.X)
    before = adata.X.copy()
    model = scdit.fit(adata, "condition", max_steps=3, **tiny)
    model.predict("G1", source=adata[:20], seed=0)
    assert np.array_equal(adata.X, before)


def test_unknown_covariate_key_at_predict(counts_model, log1p_model):
    with pytest.raises(KeyError, match=r"donor.*trained with \['cell_type'\]"):
        counts_model.predict("G1", n_cells=5, covariates={"cell_type": "T", "donor": "d1"},
                             seed=0)
    with pytest.raises(KeyError, match=r"cell_type.*trained with \[\]"):
        log1p_model.predict("G1", n_cells=5, covariates={"cell_type": "T"}, seed=0)
