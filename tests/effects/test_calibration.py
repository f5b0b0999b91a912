"""Drift calibration of control-source predictions (calibrate='mean' / 'cell')."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scdit


def test_drift_calibration_invariants(counts_adata, tiny):
    """Under the control condition, 'cell' calibration returns the source cells and 'mean'
    calibration keeps each context's mean; a perturbation moves by its difference from control."""
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=10, seed=0, **tiny)
    ctrl = counts_adata[counts_adata.obs.condition == "ctrl"]
    ctrl = ctrl[np.r_[np.flatnonzero(ctrl.obs.cell_type == "B")[:6],
                      np.flatnonzero(ctrl.obs.cell_type == "T")[:6]]].copy()
    tokens = model._encode_cells(model._check_source(ctrl, None))
    cov = ctrl.obs[["cell_type"]]

    def run(label, mode):
        return torch.as_tensor(model.sample(label, 12, covariates=cov, source_tokens=tokens,
                                            output="tokens", seed=3, calibrate=mode))

    torch.testing.assert_close(run("ctrl", "cell"), tokens, atol=1e-5, rtol=0)
    for group in (slice(0, 6), slice(6, 12)):  # per context
        torch.testing.assert_close(run("ctrl", "mean")[group].mean(0), tokens[group].mean(0),
                                   atol=1e-5, rtol=0)
    plain, control = run("G1", None), run("ctrl", None)
    torch.testing.assert_close(run("G1", "cell"), tokens + plain - control, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="alternative corrections"):
        model.predict("G1", source=ctrl, calibrate="cell", anchor=True)
    pred = model.predict("G1", source=ctrl, seed=1, calibrate="mean")
    assert pred.shape == (12, counts_adata.n_vars) and pred.uns["scdit"]["calibrate"] == "mean"
    with pytest.raises(ValueError, match="calibrate must be None, 'mean' or 'cell'"):
        model.predict("G1", source=ctrl, calibrate="median")


def test_drift_calibration_needs_a_control_source(counts_model):
    with pytest.raises(ValueError, match="calibrate needs a model fitted with source='control'"):
        counts_model.predict("G1", n_cells=5, calibrate="mean")
