"""Control cells as the flow source: transport of given cells, contexts, covariate dropout; centring of the control flow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import scdit


def test_control_source_transports_given_cells(counts_adata, tiny, tmp_path):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=20, seed=0, **tiny)
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
    # guidance scale 1 = the conditional model
    g1 = model.predict("G1", source=ctrl, seed=2, guidance_scale=1.0)
    assert np.array_equal(g1.X.toarray(), pred.X.toarray())


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
    assert model._seen_in_context("G1", cov).tolist() == [False, True]
    assert model._seen_in_context("G2", cov).tolist() == [True, True]
    noise = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="noise",
                      max_steps=5, **tiny)
    assert noise.config.conditions.covariate_dropout == 0.0 and not noise._context_fallback()
    ctrl_b = train[(train.obs.condition == "ctrl") & (train.obs.cell_type == "B")][:5].copy()
    with pytest.raises(ValueError, match=r"anchor=True needs training cells of \['G1'\] in "
                                         r"context \{'cell_type': 'B'\}"):
        model.predict("G1", source=ctrl_b, anchor=True)
    with pytest.raises(ValueError, match=r"needs training cells of \['G1'\] in context"):
        model.predict("G1+G3", source=ctrl_b, anchor=True)  # member never seen in B
    assert model.predict("G2", source=ctrl_b, anchor=True, seed=0).n_obs == 5
    # control source: an unseen double of seen members is anchored by default
    auto = model.predict("G2+G3", source=ctrl_b, seed=0)
    np.testing.assert_array_equal(auto.X.toarray(),
                                  model.predict("G2+G3", source=ctrl_b, seed=0, anchor=True).X.toarray())
    assert not np.array_equal(auto.X.toarray(),
                              model.predict("G2+G3", source=ctrl_b, seed=0, anchor=False).X.toarray())


def test_context_centres_hand_computed():
    from scdit._model import _context_centres

    tokens = torch.tensor([[[1.0]], [[3.0]], [[10.0]], [[20.0]]])  # (4, T=1, P=1)
    covs = torch.tensor([[1], [1], [2], [2]])
    assert _context_centres(tokens, covs).flatten().tolist() == [2.0, 2.0, 15.0, 15.0]
    assert _context_centres(tokens, torch.zeros((4, 0), dtype=torch.long)).flatten().tolist() \
        == [8.5] * 4


def test_centred_control_flow_is_translation_equivariant(counts_adata, tiny):
    """With centring, shifting every source cell by c shifts every output by c."""
    from scdit._config import FlowConfig

    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"],
                      flow=FlowConfig(source="control", center=True), max_steps=10, seed=0, **tiny)
    assert model.config.flow.center
    ctrl = counts_adata[(counts_adata.obs.condition == "ctrl")
                        & (counts_adata.obs.cell_type == "B")][:12].copy()
    tokens = model._encode_cells(model._check_source(ctrl, None))
    cov = ctrl.obs[["cell_type"]]
    shift = torch.linspace(-1, 1, tokens[0].numel()).view(tokens.shape[1:])
    a = model.sample("G1", 12, covariates=cov, source_tokens=tokens, output="tokens", seed=3)
    b = model.sample("G1", 12, covariates=cov, source_tokens=tokens + shift, output="tokens",
                     seed=3)
    assert np.allclose(b - a, shift.numpy()[None], atol=1e-4)


def test_centring_is_off_by_default_and_old_configs_load():
    from scdit._config import DataConfig, ScDiTConfig

    cfg = ScDiTConfig(data=DataConfig(condition_key="condition", control="ctrl"))
    assert cfg.flow.center is False
    d = cfg.to_dict()
    del d["flow"]["center"]  # saved before the option existed
    assert ScDiTConfig.from_dict(d).flow.center is False
