"""predict's composition of the generator with effect estimates, through the public API."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import scdit
from tests.helpers import dense


@pytest.fixture(scope="module")
def singles_model():
    """log1p model trained on control and singles only (``G1+G2`` unseen)."""
    from tests.helpers import TINY, make_log1p_adata

    adata = make_log1p_adata()
    adata = adata[adata.obs["condition"] != "G1+G2"].copy()
    kw = {k: v for k, v in TINY.items() if k in ("preset", "verbose")}
    return scdit.fit(adata, "condition", max_steps=30, seed=0,
                     train={"calibrate_guidance": False}, **kw)


def test_public_signatures_are_small_and_have_no_private_arguments():
    predict = inspect.signature(scdit.ScDiT.predict).parameters
    sample = inspect.signature(scdit.ScDiT.sample).parameters
    assert len(predict) - 1 <= 12  # self excluded
    assert not [p for p in (*predict, *sample) if p.startswith("_")]
    for removed in ("anchor", "shrink", "calibrate", "target_prior", "steps", "solver"):
        assert removed not in predict


def test_generator_alone_is_one_argument_away(singles_model):
    auto = singles_model.predict("G1+G2", n_cells=40, seed=0)
    alone = singles_model.predict("G1+G2", n_cells=40, seed=0, effects="none")
    assert auto.uns["scdit"]["mean_set_by"] == {"G1+G2": "additive"}
    assert alone.uns["scdit"]["mean_set_by"] == {"G1+G2": "generator"}
    assert not np.allclose(dense(auto.X), dense(alone.X))
    seen = singles_model.predict("G1", n_cells=40, seed=0)
    assert seen.uns["scdit"]["mean_set_by"] == {"G1": "seen"}  # its (shrunk) training mean


def test_additive_estimate_sets_the_mean_of_an_unseen_combination(singles_model):
    ref = singles_model.reference
    X, lab = dense(ref.X).astype(np.float64), ref.obs["condition"].to_numpy()
    target = X[lab == "G1"].mean(0) + X[lab == "G2"].mean(0) - X[lab == "ctrl"].mean(0)
    out = singles_model.predict("G1+G2", n_cells=200, seed=1,
                                effects=scdit.EffectConfig(shrink=False))
    got = dense(out.X).mean(0)
    # the decoded (clipped at 0) mean matches the target where the target is not below 0
    ok = target > 0.05
    np.testing.assert_allclose(got[ok], target[ok], atol=0.02)


def test_always_gives_a_seen_perturbation_its_training_mean(singles_model):
    ref = singles_model.reference
    X, lab = dense(ref.X).astype(np.float64), ref.obs["condition"].to_numpy()
    out = singles_model.predict("G3", n_cells=200, seed=2, effects="always")
    assert out.uns["scdit"]["mean_set_by"] == {"G3": "seen"}
    np.testing.assert_allclose(dense(out.X).mean(0), X[lab == "G3"].mean(0), atol=0.02)


def test_effects_and_sampling_arguments_are_checked(singles_model):
    with pytest.raises(ValueError, match="mode"):
        singles_model.predict("G1", n_cells=5, effects="sometimes")
    with pytest.raises(TypeError, match="SamplingConfig"):
        singles_model.predict("G1", n_cells=5, sampling={"steps": 2})
    with pytest.raises(ValueError, match="steps"):
        scdit.SamplingConfig(steps=0)
    with pytest.raises(ValueError, match="seed"):
        singles_model.predict("G1", n_cells=5, seed=-1)
    out = singles_model.predict("G1", n_cells=5, seed=0,
                                sampling=scdit.SamplingConfig(steps=2, solver="euler"))
    assert out.uns["scdit"]["steps"] == 2 and out.uns["scdit"]["solver"] == "euler"


def test_sample_matches_predict_on_the_modelled_genes(singles_model):
    """``sample`` integrates the same flow noise as ``predict`` for the same seed and label
    (noise starts: without source a seen label is otherwise inverted from stored controls)."""
    tokens = singles_model.sample("G1", 8, seed=5, output="tokens")
    assert tokens.shape[0] == 8
    X = singles_model.sample("G1", 8, seed=5)
    assert X.shape == (8, singles_model.tokenizer.n_genes)
    noise = scdit.SamplingConfig(invert=False)
    plain = singles_model.predict("G1", n_cells=8, seed=5, sampling=noise)
    np.testing.assert_allclose(dense(plain.X)[:, singles_model.gene_index], X, atol=1e-5)
    pred = singles_model.predict("G1", n_cells=8, seed=5)
    again = singles_model.predict("G1", n_cells=8, seed=pred.uns["scdit"]["seed"])
    drawn = singles_model.predict("G1", n_cells=8)  # seed=None: the drawn seed is recorded
    repeat = singles_model.predict("G1", n_cells=8, seed=drawn.uns["scdit"]["seed"])
    np.testing.assert_array_equal(dense(again.X), dense(pred.X))
    np.testing.assert_array_equal(dense(repeat.X), dense(drawn.X))


def test_order_of_combination_members_does_not_matter(singles_model):
    a = singles_model.predict("G1+G2", n_cells=20, seed=3)
    b = singles_model.predict("G2+G1", n_cells=20, seed=3)
    np.testing.assert_allclose(dense(a.X), dense(b.X), atol=1e-5)
