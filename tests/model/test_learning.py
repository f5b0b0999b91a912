"""Training learns: a tiny fit moves a perturbation's generated mean toward the truth.

The fast check runs in the default suite (seconds of CPU): on data where ``G1`` lifts genes
``G10`` … ``G14`` about four-fold, the generator alone (no effect estimator on top) must recover
most of the control → ``G1`` shift of those genes, and an untrained model of the same architecture
must fail the same check, so that the check can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import scdit
from scdit.data import counts_to_log1p
from tests.helpers import dense, make_counts_adata

BLOCK = [f"G{j}" for j in range(10, 15)]  # up-regulated by G1
LEARN_STEPS = 300
MIN_RECOVERED = 0.5  # fraction of the true control -> G1 shift; trained ~0.8-0.97 over seeds
MAX_ERROR = 0.3  # |predicted - true| G1 mean as a fraction of |control - true|; trained <~0.07


@pytest.fixture(scope="module")
def learn_data():
    """log1p cells of control, G1 and G2 (200 each), dense."""
    adata = make_counts_adata(seed=0, conditions={"ctrl": 200, "G1": 200, "G2": 200})
    adata.X = counts_to_log1p(sp.csr_matrix(adata.X)).toarray()
    return adata


def _generator_mean(model, label: str) -> np.ndarray:
    """Mean log1p expression of the generator's cells alone (no effect estimate on top)."""
    return dense(model.predict(label, n_cells=300, seed=0, effects="none").X).mean(0)


def _learning_scores(model, adata) -> tuple[float, float]:
    """(fraction of the true control -> G1 shift recovered on BLOCK, error of the G1 mean on BLOCK
    relative to the control-to-G1 distance)."""
    cols = adata.var_names.get_indexer(BLOCK)
    X = dense(adata.X)[:, cols]
    labels = adata.obs["condition"].to_numpy()
    true_ctrl, true_g1 = X[labels == "ctrl"].mean(0), X[labels == "G1"].mean(0)
    pred_ctrl, pred_g1 = _generator_mean(model, "ctrl")[cols], _generator_mean(model, "G1")[cols]
    recovered = (pred_g1 - pred_ctrl).mean() / (true_g1 - true_ctrl).mean()
    error = np.abs(pred_g1 - true_g1).mean() / np.abs(true_ctrl - true_g1).mean()
    return float(recovered), float(error)


def _learned(recovered: float, error: float) -> bool:
    return recovered > MIN_RECOVERED and error < MAX_ERROR


def test_a_tiny_fit_moves_the_perturbed_mean_toward_the_truth(learn_data, tiny):
    model = scdit.fit(learn_data, "condition", max_steps=LEARN_STEPS, seed=0, **tiny)
    recovered, error = _learning_scores(model, learn_data)
    assert _learned(recovered, error), (recovered, error)


def test_an_untrained_model_fails_the_learning_check(learn_data, tiny):
    model = scdit.fit(learn_data, "condition", max_steps=1, seed=0, **tiny)
    recovered, error = _learning_scores(model, learn_data)
    assert not _learned(recovered, error), (recovered, error)
    assert abs(recovered) < 0.1  # one step of a zero-initialised field: no shift at all


@pytest.mark.slow
def test_model_learns_perturbation_effects(counts_adata, tiny):
    """Each single up-regulates its own 5-gene block ×4 and knocks its target down ×0.1."""
    model = scdit.fit(counts_adata, "condition", max_steps=600, seed=0, **tiny)

    def mean(label, genes):
        cols = model.var_names.get_indexer(genes)
        return dense(model.predict(label, n_cells=200, seed=0).X)[:, cols].mean()

    b1, b2 = [f"G{j}" for j in range(10, 15)], [f"G{j}" for j in range(15, 20)]
    ctrl1, ctrl2 = mean("ctrl", b1), mean("ctrl", b2)
    assert mean("G1", b1) > 2 * ctrl1 and mean("G1", b1) > 2 * mean("G3", b1)
    assert mean("G2", b2) > 2 * ctrl2 and mean("G2", b2) > mean("G2", b1)
    assert mean("G1+G2", b1) > 2 * ctrl1 and mean("G1+G2", b2) > 2 * ctrl2
    assert mean("G1", ["G1"]) < 0.5 * mean("ctrl", ["G1"])
