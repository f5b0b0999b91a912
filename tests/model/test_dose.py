"""Fitting and predicting with doses."""

from __future__ import annotations

import numpy as np
import pytest

import scdit


def test_fit_with_dose(counts_adata, tiny):
    adata = counts_adata.copy()
    adata.obs["dose"] = np.where(adata.obs.condition == "ctrl", 0.0,
                                 np.where(np.arange(adata.n_obs) % 2, 1.0, 10.0))
    model = scdit.fit(adata, "condition", dose_key="dose", max_steps=10, **tiny)
    assert model.field.encoder.dose is not None
    pred = model.predict("G1", n_cells=5, dose=10.0, seed=0)
    assert pred.n_obs == 5
    with pytest.raises(ValueError, match="pass dose="):
        model.predict("G1", n_cells=5)
    # effect estimates need dose-free training means: a dose model is the generator alone
    assert pred.uns["scdit"]["effects"] == "none"
    assert pred.uns["scdit"]["mean_set_by"] == {"G1": "generator"}
    unseen = model.predict("G2+G3", n_cells=5, dose="1+1", seed=0)
    assert unseen.uns["scdit"]["mean_set_by"] == {"G2+G3": "generator"}
    with pytest.raises(ValueError, match="not available for models fitted with dose_key"):
        model.predict("G1", n_cells=5, dose=10.0, effects="always")
    with pytest.raises(KeyError, match="dose_key 'nope'"):
        scdit.fit(adata, "condition", dose_key="nope", **tiny)
