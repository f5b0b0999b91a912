"""The guidance scale of seen perturbations chosen after training (calibrate_seen_guidance)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import scdit
from scdit.data import to_log1p
from scdit.model import GUIDANCE_SCALES, calibrate_seen_guidance
from scdit.model._calibrate import energy_distance
from tests.helpers import TINY, TINY_CALIBRATED, dense, make_log1p_adata


def test_energy_distance_hand_computed():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0]], dtype=torch.float64)
    # 2 E|x - y| - E|x - x'| - E|y - y'| = 2 * 1.5 - 0.5 - 0
    assert energy_distance(x, y) == pytest.approx(2.5)
    assert energy_distance(x, x) == pytest.approx(0.0)


def test_fit_records_and_applies_the_chosen_scale(log1p_model, tmp_path):
    calib = log1p_model.summary["seen_guidance"]
    assert calib["scales"] == list(GUIDANCE_SCALES)
    assert calib["scale"] in GUIDANCE_SCALES
    assert calib["groups"] == 4  # G1, G2, G3, G1+G2 (no covariates); not the control
    assert len(calib["energy"]) == len(GUIDANCE_SCALES)
    assert calib["scale"] == GUIDANCE_SCALES[min(range(len(GUIDANCE_SCALES)),
                                                 key=calib["energy"].__getitem__)]
    assert log1p_model.generator.seen_scale == calib["scale"]
    loaded = scdit.load(log1p_model.save(tmp_path / "m"))
    assert loaded.generator.seen_scale == calib["scale"]


def test_calibration_is_deterministic_for_a_seed(counts_model):
    a = calibrate_seen_guidance(counts_model, scales=(1.0, 2.0), max_groups=3, max_cells=30,
                                seed=3)
    b = calibrate_seen_guidance(counts_model, scales=(1.0, 2.0), max_groups=3, max_cells=30,
                                seed=3)
    assert a == b
    assert a["groups"] == 3 and len(a["energy"]) == 2


@pytest.mark.parametrize("best", [1.0, 1.5])
def test_the_scale_whose_cells_match_the_stored_ones_is_chosen(counts_model, monkeypatch, best):
    # a stand-in generator whose cells are the group's stored cells at scale ``best`` and move
    # away from them in proportion to the distance from it
    ref, data = counts_model.reference, counts_model.config.data

    def sample(label, n, *, covariates, sampling, **kw):
        rows = (ref.obs[data.condition_key] == label).to_numpy()
        for k, v in (covariates or {}).items():
            rows &= (ref.obs[k].astype(str) == v).to_numpy()
        X = dense(to_log1p(ref.X[np.flatnonzero(rows)], "counts"))[:, counts_model.gene_index]
        return X[::-1][:n] + 2.0 * abs(sampling.guidance_scale - best)

    monkeypatch.setattr(counts_model, "sample", sample)
    out = calibrate_seen_guidance(counts_model, scales=(1.0, 1.25, 1.5), max_cells=30)
    assert out["scale"] == best
    assert out["groups"] == 8  # 4 perturbed labels x 2 cell types, control excluded
    assert np.argsort(out["energy"]).tolist() == ([0, 1, 2] if best == 1.0 else [2, 1, 0])


def test_which_labels_are_guided(counts_model):
    gen = counts_model.generator
    old = gen.seen_scale
    try:
        gen.seen_scale = 1.7
        auto = scdit.SamplingConfig()
        assert gen.guidance("G1", auto) == 1.7
        assert gen.guidance("G2+G1", auto) == 1.7  # a seen combination, any order
        assert gen.guidance("ctrl", auto) == 1.0
        assert gen.guidance("G3+G1", auto) == 1.0  # unseen combination of seen members
        assert gen.guidance("G1", scdit.SamplingConfig(guidance_scale=1.0)) == 1.0
    finally:
        gen.seen_scale = old


def test_no_unconditional_branch_no_calibration(tmp_path):
    dit = dataclasses.replace(scdit.DIT_PRESETS["tiny"], cond_dropout=0.0)
    kw = {k: v for k, v in TINY_CALIBRATED.items() if k != "preset"}  # calibration asked for
    model = scdit.fit(make_log1p_adata(), "condition", dit=dit, max_steps=5, seed=0, **kw)
    assert "seen_guidance" not in model.summary
    assert model.generator.seen_scale == 1.0


def test_calibration_switched_off(tmp_path):
    """``calibrate_guidance=False`` with an unconditional branch: no calibration, scale 1, and
    the setting survives save/load."""
    model = scdit.fit(make_log1p_adata(), "condition", max_steps=5, seed=0, **TINY)
    assert model.config.dit.cond_dropout > 0 and not model.config.train.calibrate_guidance
    assert "seen_guidance" not in model.summary
    assert model.generator.seen_scale == 1.0
    loaded = scdit.load(model.save(tmp_path / "m"))
    assert loaded.config.train.calibrate_guidance is False
    assert loaded.generator.seen_scale == 1.0


def test_groups_too_small_keep_scale_one(log1p_model):
    out = calibrate_seen_guidance(log1p_model, min_cells=10_000)
    assert out == {"scale": 1.0, "scales": list(GUIDANCE_SCALES), "energy": [], "groups": 0}


@pytest.mark.parametrize("scales", [(), (1.0, -1.0), (float("nan"),)])
def test_bad_scales(log1p_model, scales):
    with pytest.raises(ValueError, match="scales must be non-negative"):
        calibrate_seen_guidance(log1p_model, scales=scales)


def test_in_seen_contexts(counts_model):
    gen, cells = counts_model.generator, counts_model.cells
    seen = pd.DataFrame({"cell_type": ["T", "B"]})
    assert gen.in_seen_contexts("G1", seen, cells.seen_in_context)
    assert not gen.in_seen_contexts("G1", pd.DataFrame({"cell_type": ["T", "Z"]}),
                                    cells.seen_in_context)
    assert gen.guidance("G1", scdit.SamplingConfig(), seen_context=False) == 1.0
