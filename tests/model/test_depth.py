"""A seen perturbation's counts come at its own sequencing depth (``EffectTargets.depth_factor``)."""

from __future__ import annotations

import numpy as np
import pytest

import scdit
from scdit.model import LIBRARY_KEY
from tests.helpers import TINY, dense, make_counts_adata


@pytest.fixture(scope="module")
def deep_model():
    """G1's cells sequenced 3× deeper than control (every count tripled); others unchanged."""
    adata = make_counts_adata(seed=3)
    g1 = (adata.obs["condition"] == "G1").to_numpy()
    adata.X[g1] *= 3
    model = scdit.fit(adata, "condition", source="noise", max_steps=10, seed=0, **TINY)
    return adata, model


def _median_library(cells) -> float:
    return float(np.median(dense(cells.X).sum(1)))


def test_factor_is_the_ratio_of_median_libraries(deep_model):
    adata, model = deep_model
    lib = dense(adata.X).sum(1)
    labels = adata.obs["condition"].to_numpy()
    # the model's reference keeps every training cell here (< 1,000 per group)
    want = np.median(lib[labels == "G1"]) / np.median(lib[labels == "ctrl"])
    assert model.targets.depth_factor("G1", ()) == pytest.approx(want, rel=1e-6)
    assert model.targets.depth_factor("ctrl", ()) == 1.0


def test_seen_perturbation_is_generated_at_its_depth(deep_model):
    adata, model = deep_model
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    src_lib = float(np.median(dense(ctrl.X).sum(1)))
    deep = model.predict("G1", source=ctrl, seed=0, verbose=False)
    plain = model.predict("G2", source=ctrl, seed=0, verbose=False)
    alone = model.predict("G1", source=ctrl, seed=0, effects="none", verbose=False)
    f1, f2 = (model.targets.depth_factor(g, ()) for g in ("G1", "G2"))
    assert f1 > 2.0 and f2 < 1.6
    # both means are set to training means (cells near 1e4 per cell in log1p), so each label's
    # library follows the source cells' times its factor
    assert _median_library(deep) / _median_library(plain) == pytest.approx(f1 / f2, rel=0.25)
    assert _median_library(deep) == pytest.approx(src_lib * f1, rel=0.35)
    # the generator alone has no estimate, hence no depth estimate: ~3x shallower than G1's
    assert _median_library(alone) < _median_library(deep) / 2
    assert deep.uns["scdit"]["depth_factor"] == {"G1": pytest.approx(f1)}
    assert "depth_factor" not in alone.uns["scdit"]
    # log1p output is per 1e4 and carries no depth
    log1p = model.predict("G1", source=ctrl, seed=0, representation="log1p", verbose=False)
    assert np.isfinite(dense(log1p.X)).all() and "depth_factor" not in log1p.uns["scdit"]


def test_cells_of_the_label_itself_keep_their_depth(deep_model):
    """Without source cells a noise-source model carries over the label's own stored cells,
    which already have its depth; cells of another condition are scaled by the ratio of the
    two factors."""
    adata, model = deep_model
    ref = model.reference
    own = model.predict("G1", 300, seed=0, verbose=False)
    alone = model.predict("G1", 300, seed=0, effects="none", verbose=False)
    assert (ref.obs.loc[own.obs["reference_cell"], "condition"] == "G1").all()
    assert "depth_factor" not in own.uns["scdit"]
    # decoded at the reference cells' own libraries, as the generator alone's (same cells):
    # not another 3-4x above them
    assert _median_library(own) / _median_library(alone) < 1.5
    g2 = adata[adata.obs["condition"] == "G2"].copy()
    from_g2 = model.predict("G1", source=g2, seed=0, verbose=False)
    f1, f2 = (model.targets.depth_factor(g, ()) for g in ("G1", "G2"))
    assert from_g2.uns["scdit"]["depth_factor"] == {"G1": pytest.approx(f1 / f2)}


def test_factor_per_context(counts_model):
    ref = counts_model.reference
    lib = ref.obs[LIBRARY_KEY].to_numpy()
    cond = ref.obs["condition"].astype(str).to_numpy()
    ct = ref.obs["cell_type"].astype(str).to_numpy()
    for c in ("T", "B"):
        want = np.median(lib[(cond == "G2") & (ct == c)]) / np.median(lib[(cond == "ctrl")
                                                                          & (ct == c)])
        assert counts_model.targets.depth_factor("G2", (c,)) == pytest.approx(want)
    ctrl = counts_model.reference[(cond == "ctrl") & (ct == "B")].copy()
    out = counts_model.predict("G2", source=ctrl, seed=0, verbose=False)
    assert out.uns["scdit"]["depth_factor"] == {
        "G2 | B": pytest.approx(counts_model.targets.depth_factor("G2", ("B",)))}


def test_small_groups_keep_their_depth():
    adata = make_counts_adata(seed=4, conditions={"ctrl": 160, "G1": 8, "G2": 60, "G3": 60})
    adata.X[(adata.obs["condition"] == "G1").to_numpy()] *= 3
    model = scdit.fit(adata, "condition", source="noise", max_steps=2, seed=0, **TINY)
    assert model.targets.depth_factor("G1", ()) == 1.0  # 8 cells: below DEPTH_MIN_CELLS
