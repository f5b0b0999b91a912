"""Bad input to predict gives clear errors (checked by message)."""

from __future__ import annotations

import pytest


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


def test_unknown_covariate_key_at_predict(counts_model, log1p_model):
    with pytest.raises(KeyError, match=r"donor.*trained with \['cell_type'\]"):
        counts_model.predict("G1", n_cells=5, covariates={"cell_type": "T", "donor": "d1"},
                             seed=0)
    with pytest.raises(KeyError, match=r"cell_type.*trained with \[\]"):
        log1p_model.predict("G1", n_cells=5, covariates={"cell_type": "T"}, seed=0)


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


def test_unseen_covariate_value_is_a_clear_error(counts_model, counts_adata):
    src = counts_adata[:5].copy()
    src.obs["cell_type"] = "NK"
    with pytest.raises(KeyError, match=r"Unknown value\(s\) \['NK'\] for covariate 'cell_type'"):
        counts_model.predict("G1", source=src)
