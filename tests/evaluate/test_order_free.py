"""``evaluate`` matches combinations order-free: ``"B+A"`` is the condition ``"A+B"``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from scdit.data import canonical_label, split_label
from scdit.evaluate import baseline_predictions, evaluate

G = 30
EFFECTS = {"A": (0, 5, 2.0), "B": (10, 15, -1.0)}  # genes [lo, hi) shifted by a member
BASELINES = ("no_change", "mean", "additive", "ceiling")


def _cells(conditions, label=None, seed=0, n=50) -> AnnData:
    """log1p-like cells whose group means are base + Σ member effects; ``label`` renames all."""
    rng = np.random.default_rng(seed)
    base = 2.0 + np.linspace(0, 1, G)
    blocks, labels = [], []
    for c in conditions:
        mean = base.copy()
        for m in split_label(c, "ctrl"):
            lo, hi, eff = EFFECTS[m]
            mean[lo:hi] += eff
        blocks.append(mean + rng.normal(scale=0.3, size=(n, G)))
        labels += [label or c] * n
    obs = pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))])
    return AnnData(np.vstack(blocks).astype(np.float32), obs=obs,
                   var=pd.DataFrame(index=[f"g{i}" for i in range(G)]))


def test_labels_have_one_canonical_form():
    assert split_label("B+A") == ("A", "B")
    with pytest.raises(ValueError, match="Malformed condition label ' B \\+ A '"):
        split_label(" B + A ")  # space-padded: an error, never silently repaired
    assert split_label("B+A", sort=False) == ("B", "A")
    assert canonical_label("B+A", "ctrl") == "A+B" and canonical_label("A+ctrl", "ctrl") == "A"
    assert canonical_label("ctrl", "ctrl") == "ctrl"


def test_prediction_labelled_b_plus_a_is_scored_against_real_a_plus_b():
    real = _cells(["ctrl", "A", "B", "A+B"])
    ordered = _cells(["A+B"], seed=3)
    swapped = _cells(["A+B"], label="B+A", seed=3)
    ref = evaluate(ordered, real, "condition", baselines=BASELINES)
    out = evaluate(swapped, real, "condition", baselines=BASELINES)
    assert set(out.condition) == {"A+B"}  # reported as written in `real`
    assert {"scdit", "additive", "ceiling"} <= set(out.method)
    pd.testing.assert_frame_equal(out, ref)
    picked = evaluate(swapped, real, "condition", conditions=["B+A"], baselines=BASELINES)
    pd.testing.assert_frame_equal(picked, ref)


def test_real_cells_written_b_plus_a_are_one_condition_with_a_plus_b_predictions():
    real = _cells(["ctrl", "A", "B", "A+B"])
    real.obs["condition"] = real.obs["condition"].replace({"A+B": "B+A"})
    pred = _cells(["A+B"], seed=3)
    df = evaluate(pred, real, "condition", baselines=("additive",))
    assert set(df.condition) == {"B+A"} and set(df.method) == {"scdit", "additive"}


def test_baseline_predictions_accept_either_order():
    real = _cells(["ctrl", "A", "B", "A+B"])
    out = baseline_predictions(real, "condition", conditions=["B+A"], baselines=("additive",))
    assert set(out["additive"].obs["condition"]) == {"A+B"}


def test_model_prediction_written_b_plus_a_is_scored_against_real_a_plus_b(log1p_model,
                                                                            log1p_adata):
    """The acceptance case: ``model.predict("G2+G1")`` scored by ``evaluate`` against the real
    ``"G1+G2"`` cells gives the same rows as the prediction labelled ``"G1+G2"``."""
    real = log1p_adata
    pred_ba = log1p_model.predict("G2+G1", n_cells=60, seed=0)
    pred_ab = log1p_model.predict("G1+G2", n_cells=60, seed=0)
    kw = dict(control="ctrl", baselines=("no_change", "mean"), seed=0)
    ba = evaluate(pred_ba, real, "condition", **kw)
    ab = evaluate(pred_ab, real, "condition", **kw)
    assert set(ba["condition"]) == {"G1+G2"}  # reported under the real cells' label
    pd.testing.assert_frame_equal(ba.reset_index(drop=True), ab.reset_index(drop=True))
