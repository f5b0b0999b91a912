"""ScDiT.predict: a label's cells depend only on the seed and the label, not on the list."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import dense


def cells_of(out, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Expression and reference cells of ``label``'s rows of a prediction."""
    rows = (out.obs["condition"] == label).to_numpy()
    return dense(out.X[rows]), out.obs["reference_cell"].to_numpy()[rows]


@pytest.mark.parametrize("effects", ["none", "always"])
def test_label_cells_do_not_depend_on_the_list(counts_model, effects):
    kw = dict(n_cells=15, seed=0, effects=effects)
    X, ref = cells_of(counts_model.predict(["G3"], **kw), "G3")
    for labels in (["G3", "G1"], ["G1", "G2", "G3"]):
        X2, ref2 = cells_of(counts_model.predict(labels, **kw), "G3")
        np.testing.assert_array_equal(X2, X)
        np.testing.assert_array_equal(ref2, ref)


def test_position_free_cells_still_depend_on_the_seed(log1p_model):
    a, _ = cells_of(log1p_model.predict(["G1", "G2"], n_cells=10, seed=3), "G1")
    b, _ = cells_of(log1p_model.predict(["G2", "G1"], n_cells=10, seed=3), "G1")
    c, _ = cells_of(log1p_model.predict(["G1", "G2"], n_cells=10, seed=4), "G1")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
