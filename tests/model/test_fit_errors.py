"""Bad input to fit gives clear errors (checked by message)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdit


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
                                         r"in 6 cell\(s\) and 6 gene\(s\) \(first at cell 0, "
                                         r"gene 0\)"):
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
