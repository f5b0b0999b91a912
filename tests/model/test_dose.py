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
    with pytest.raises(KeyError, match="dose_key 'nope'"):
        scdit.fit(adata, "condition", dose_key="nope", **tiny)
