"""scdit.reflow: a straightened copy of a fitted model that a few Euler steps integrate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scdit
from scdit.flow import guided, integrate
from tests.helpers import TINY, dense, make_counts_adata, make_log1p_adata


@pytest.fixture(scope="module")
def teacher():
    return scdit.fit(make_log1p_adata(), "condition", max_steps=200, seed=0, **TINY)


@pytest.fixture(scope="module")
def teacher_weights(teacher):
    """A copy of the teacher's weights taken before it is reflowed."""
    return {k: v.clone() for k, v in teacher.field.state_dict().items()}


@pytest.fixture(scope="module")
def reflowed(teacher, teacher_weights):
    return scdit.reflow(teacher, n_pairs=2048, max_steps=200, seed=0, verbose=False)


def _solve(model, label: str, x1: torch.Tensor, steps: int, solver: str) -> torch.Tensor:
    cond = {"atoms": torch.as_tensor(model.vocab.encode([label] * len(x1))),
            "covariates": torch.zeros((len(x1), 0), dtype=torch.long)}
    return integrate(guided(model.field, cond, 1.0), x1, steps=steps, solver=solver)


def test_one_euler_step_of_the_reflowed_model_lands_where_the_fitted_flow_does(teacher,
                                                                                reflowed):
    """Fresh noise (not the pairs'): one Euler step of the straightened flow is much closer to
    the fitted model's 20-step Heun solution than one Euler step of the fitted model."""
    x1 = torch.randn((512, *reflowed.generator.shape), generator=torch.Generator().manual_seed(7))
    for label in ("G1", "ctrl"):
        target = _solve(teacher, label, x1, 20, "heun")
        err_teacher = float(((_solve(teacher, label, x1, 1, "euler") - target) ** 2).mean())
        err_reflow = float(((_solve(reflowed, label, x1, 1, "euler") - target) ** 2).mean())
        assert err_reflow < 0.5 * err_teacher, (label, err_reflow, err_teacher)


def test_reflowed_model_samples_few_euler_steps_and_round_trips(teacher, teacher_weights,
                                                                reflowed, tmp_path):
    assert reflowed.config.flow.solver == "euler" and reflowed.config.flow.steps == 1
    assert teacher.config.flow.solver == "heun"  # the fitted model is unchanged
    info = reflowed.summary["reflow"]
    assert info["n_pairs"] == 2048 and info["teacher_steps"] == 20 and info["steps"] == 200
    for (name, a), b in zip(teacher.field.state_dict().items(),
                            reflowed.field.state_dict().values(), strict=True):
        assert a.data_ptr() != b.data_ptr(), name  # a copy was trained
    for a, b in zip(teacher_weights.values(), teacher.field.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # reflow did not touch its input
    reflowed.save(tmp_path / "m")
    loaded = scdit.load(tmp_path / "m")
    assert loaded.summary["reflow"]["n_pairs"] == 2048
    p1 = reflowed.predict("G1", n_cells=50, seed=3)
    p2 = loaded.predict("G1", n_cells=50, seed=3)
    np.testing.assert_array_equal(dense(p1.X), dense(p2.X))


def test_reflow_of_a_control_source_model_with_covariates():
    adata = make_counts_adata()
    model = scdit.fit(adata, "condition", covariate_keys=["cell_type"], max_steps=30, seed=0,
                      **TINY)
    assert model.config.flow.source == "control"
    r = scdit.reflow(model, n_pairs=256, max_steps=10, steps=1, verbose=False)
    assert r.config.flow.steps == 1
    src = adata[(adata.obs["condition"] == "ctrl") & (adata.obs["cell_type"] == "B")].copy()
    out = r.predict("G1", source=src, seed=0)
    assert out.n_obs == src.n_obs and np.isfinite(dense(out.X)).all()


@pytest.mark.parametrize("kwargs, err, phrase", [
    ({"n_pairs": 0}, ValueError, "n_pairs"),
    ({"max_steps": 0}, ValueError, "max_steps"),
    ({"steps": 1.5}, ValueError, "steps"),
    ({"seed": -1}, ValueError, "seed"),
    ({"teacher": scdit.SamplingConfig(solver="adaptive")}, ValueError, "fixed-step"),
    ({"teacher": "heun"}, TypeError, "SamplingConfig"),
    ({"train": {"lr": 1e-4}}, TypeError, "TrainConfig"),
])
def test_reflow_bad_arguments(teacher, kwargs, err, phrase):
    with pytest.raises(err, match=phrase):
        scdit.reflow(teacher, verbose=False, **kwargs)


def test_reflow_needs_a_fitted_model():
    with pytest.raises(TypeError, match="fitted scdit.ScDiT"):
        scdit.reflow("model.safetensors")
