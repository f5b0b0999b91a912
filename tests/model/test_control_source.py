"""Control cells as the flow source: transport of given cells, contexts, covariate dropout; centring of the control flow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scdit
from tests.helpers import TINY_CALIBRATED


def test_control_source_transports_given_cells(counts_adata, tmp_path):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=20, seed=0, **TINY_CALIBRATED)  # the fit chooses a seen scale
    assert model.config.flow.source == "control"
    ctrl = counts_adata[(counts_adata.obs.condition == "ctrl")
                        & (counts_adata.obs.cell_type == "B")][:15].copy()
    pred = model.predict("G1", source=ctrl, seed=2)
    assert pred.n_obs == 15
    assert list(pred.obs["reference_cell"]) == list(ctrl.obs_names)
    assert (pred.obs["cell_type"] == "B").all()
    again = model.predict("G1", source=ctrl, seed=2)
    assert np.array_equal(pred.X.toarray(), again.X.toarray())
    model.save(tmp_path / "m")
    loaded = scdit.load(tmp_path / "m")
    assert np.array_equal(loaded.predict("G1", source=ctrl, seed=2).X.toarray(), pred.X.toarray())
    # without source: stored control cells of the requested context
    p2 = model.predict("G2", n_cells=7, covariates={"cell_type": "T"}, seed=0)
    assert p2.n_obs == 7 and (p2.obs["cell_type"] == "T").all()
    # the default guidance of a seen label is the scale the fit chose for seen labels
    g1 = model.predict("G1", source=ctrl, seed=2, sampling=scdit.SamplingConfig(
        guidance_scale=model.summary["seen_guidance"]["scale"]))
    assert np.array_equal(g1.X.toarray(), pred.X.toarray())
    g2 = model.predict("G1", source=ctrl, seed=2,
                       sampling=scdit.SamplingConfig(guidance_scale=2.0))
    assert not np.array_equal(g2.X.toarray(), pred.X.toarray())


def test_control_source_needs_controls_in_every_context(counts_adata, tiny):
    bad = counts_adata[~((counts_adata.obs.condition == "ctrl")
                         & (counts_adata.obs.cell_type == "B"))].copy()
    with pytest.raises(ValueError, match=r"needs control cells.*'cell_type': 'B'"):
        scdit.fit(bad, "condition", covariate_keys=["cell_type"], source="control", **tiny)
    with pytest.raises(ValueError, match="source must be"):
        scdit.fit(counts_adata, "condition", source="controls", **tiny)


def test_control_source_drops_covariates_for_unseen_context(counts_adata, tiny):
    # hold out G1 in cell type B: (G1, B) never seen, (G1, T) seen
    train = counts_adata[~((counts_adata.obs.condition == "G1")
                           & (counts_adata.obs.cell_type == "B"))].copy()
    model = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=5, **tiny)
    assert model.config.conditions.covariate_dropout == 0.5
    cov = pd.DataFrame({"cell_type": ["B", "T"]})
    assert model.cells.seen_in_context("G1", cov).tolist() == [False, True]
    assert model.cells.seen_in_context("G2", cov).tolist() == [True, True]
    # (G1, B) unseen: its covariates are dropped (code 0), (G1, T) keeps them
    codes = model.generator.covariate_codes("G1", cov, 2, model.cells.seen_in_context)
    assert codes[0].tolist() == [0] and codes[1].tolist() != [0]
    noise = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="noise",
                      max_steps=5, **tiny)
    assert noise.config.conditions.covariate_dropout == 0.0
    codes = noise.generator.covariate_codes("G1", cov, 2, noise.cells.seen_in_context)
    assert codes[0].tolist() != [0]
    ctrl_b = train[(train.obs.condition == "ctrl") & (train.obs.cell_type == "B")][:5].copy()
    with pytest.raises(ValueError, match=r"An effect estimate needs training cells of \['G1'\] "
                                         r"in context \{'cell_type': 'B'\}"):
        model.predict("G1", source=ctrl_b, effects="always")
    with pytest.raises(ValueError, match=r"needs training cells of \['G1'\] in context"):
        model.predict("G1+G3", source=ctrl_b, effects="always")  # member never seen in B
    assert model.predict("G2", source=ctrl_b, effects="always", seed=0).n_obs == 5
    # control source: an unseen double of seen members gets the additive estimate by default
    auto = model.predict("G2+G3", source=ctrl_b, seed=0)
    always = model.predict("G2+G3", source=ctrl_b, seed=0, effects="always")
    np.testing.assert_array_equal(auto.X.toarray(), always.X.toarray())
    alone = model.predict("G2+G3", source=ctrl_b, seed=0, effects="none")
    assert not np.array_equal(auto.X.toarray(), alone.X.toarray())


def test_removed_centring_option_old_configs():
    """FlowConfig.center was removed (measured harmful): old files with it off still load, a
    file with it on gets a clear error."""
    from scdit import DataConfig, ScDiTConfig

    d = ScDiTConfig(data=DataConfig(condition_key="condition", control="ctrl")).to_dict()
    d["flow"]["center"] = False
    assert ScDiTConfig.from_dict(d).flow.source == "auto"
    d["flow"]["center"] = True
    with pytest.raises(ValueError, match="center=True"):
        ScDiTConfig.from_dict(d)
