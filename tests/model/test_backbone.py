"""``DiTConfig.backbone="mlp"`` through fit, predict, save and load."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp

import scdit
from scdit.config import DIT_PRESETS
from scdit.data import counts_to_log1p
from scdit.models import DiT, MLPVelocity
from tests.helpers import TINY, dense, make_counts_adata

TINY_MLP = dataclasses.replace(DIT_PRESETS["tiny"], backbone="mlp")
KW = {k: v for k, v in TINY.items() if k != "preset"}  # TINY without its preset: dit= instead
BLOCK = [f"G{j}" for j in range(10, 15)]  # up-regulated about four-fold by G1


@pytest.fixture(scope="module")
def learn_data():
    """log1p cells of control, G1 and G2 (200 each), dense."""
    adata = make_counts_adata(seed=0, conditions={"ctrl": 200, "G1": 200, "G2": 200})
    adata.X = counts_to_log1p(sp.csr_matrix(adata.X)).toarray()
    return adata


@pytest.fixture(scope="module")
def mlp_model(learn_data):
    return scdit.fit(learn_data, "condition", dit=TINY_MLP, max_steps=300, seed=0, **KW)


def _recovered(model, adata) -> float:
    """Fraction of the true control -> G1 shift of BLOCK in the generator's cells alone."""
    cols = adata.var_names.get_indexer(BLOCK)
    labels = adata.obs["condition"].to_numpy()
    X = dense(adata.X)[:, cols]
    true = X[labels == "G1"].mean() - X[labels == "ctrl"].mean()

    def mean(label):
        return dense(model.predict(label, n_cells=300, seed=0, effects="none").X)[:, cols].mean()

    return float((mean("G1") - mean("ctrl")) / true)


def test_fit_builds_the_mlp_backbone(mlp_model):
    assert mlp_model.config.dit.backbone == "mlp"
    assert isinstance(mlp_model.field.dit, MLPVelocity)
    assert mlp_model.summary["n_params"] == sum(p.numel() for p in mlp_model.field.parameters())


def test_a_tiny_mlp_fit_learns_the_perturbation_shift(mlp_model, learn_data):
    """The same check as the DiT's learning test: the generator alone moves G1's mean toward
    the truth after 300 steps, where one step of the zero-initialised field moves nothing."""
    assert _recovered(mlp_model, learn_data) > 0.5
    untrained = scdit.fit(learn_data, "condition", dit=TINY_MLP, max_steps=1, seed=0, **KW)
    assert abs(_recovered(untrained, learn_data)) < 0.1


def test_mlp_model_save_load_round_trip(mlp_model, tmp_path):
    before = mlp_model.predict(["G1", "G2"], n_cells=20, seed=3)
    path = mlp_model.save(tmp_path / "mlp")
    assert json.loads((path / "config.json").read_text())["config"]["dit"]["backbone"] == "mlp"
    loaded = scdit.load(path)
    assert loaded.config == mlp_model.config and isinstance(loaded.field.dit, MLPVelocity)
    after = loaded.predict(["G1", "G2"], n_cells=20, seed=3)
    assert np.array_equal(dense(before.X), dense(after.X))


def _edit(path, edit) -> None:
    meta = json.loads((path / "config.json").read_text())
    edit(meta["config"]["dit"])
    (path / "config.json").write_text(json.dumps(meta))


def test_model_files_without_backbone_load_as_dit(log1p_model, tmp_path):
    """Models saved before the option have no ``backbone`` key: they are DiT models."""
    path = log1p_model.save(tmp_path / "old")
    _edit(path, lambda d: d.pop("backbone"))
    loaded = scdit.load(path)
    assert loaded.config.dit.backbone == "dit" and isinstance(loaded.field.dit, DiT)
    assert np.array_equal(dense(loaded.predict("G3", n_cells=10, seed=1).X),
                          dense(log1p_model.predict("G3", n_cells=10, seed=1).X))


@pytest.mark.parametrize(("value", "phrase"), [
    ("transformer", r"config.dit.backbone: 'transformer' is not one of \['dit', 'mlp'\]"),
    ("mlp", r"model.safetensors does not match .*configuration: backbone='mlp'"),
])
def test_edited_backbone_gets_a_clear_error(log1p_model, tmp_path, value, phrase):
    path = log1p_model.save(tmp_path / "m")
    _edit(path, lambda d: d.update(backbone=value))
    with pytest.raises(ValueError, match=phrase) as info:
        scdit.load(path)
    assert str(path / "config.json") in str(info.value)


def test_preset_and_mlp_dit_follow_the_one_place_rule(learn_data):
    """A preset name and a dit= that differs from it are refused (the message shows how to
    combine a preset's sizes with the MLP); dit= alone or a preset alone are fine."""
    with pytest.raises(ValueError, match=r"preset='tiny' and dit= disagree.*"
                                         r"DIT_PRESETS\['tiny'\], backbone='mlp'"):
        scdit.fit(learn_data, "condition", preset="tiny", dit=scdit.DiTConfig(backbone="mlp"),
                  max_steps=1, **KW)
    model = scdit.fit(learn_data, "condition", dit={"backbone": "mlp"}, max_steps=1, **KW)
    assert model.config.dit == dataclasses.replace(DIT_PRESETS["small"], backbone="mlp")
    assert isinstance(model.field.dit, MLPVelocity)
