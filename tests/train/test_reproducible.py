"""The default schedule is a number of steps, not a wall-time budget: the same ``fit`` with the
same seed gives the same model and the same cells on an idle and on a loaded machine."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

import scdit
from tests.helpers import TINY, make_log1p_adata

_BURN = "import time\nt = time.time()\nwhile time.time() - t < 120: pass\n"


def _fit():
    model = scdit.fit(make_log1p_adata(), "condition", max_steps=40, seed=3, **TINY)
    cells = model.predict(["G1", "G2"], n_cells=30, seed=1, effects="none")
    return model, cells


def test_same_model_and_cells_on_an_idle_and_a_loaded_machine():
    assert scdit.TrainConfig().max_minutes is None  # no wall-time budget by default
    idle_model, idle_cells = _fit()
    burners = [subprocess.Popen([sys.executable, "-c", _BURN]) for _ in range(3)]
    try:
        busy_model, busy_cells = _fit()
    finally:
        for p in burners:
            p.kill()
            p.wait()
    a, b = idle_model.field.state_dict(), busy_model.field.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert idle_model.summary["steps"] == busy_model.summary["steps"] == 40
    assert idle_model.summary.get("budget_steps") is None
    np.testing.assert_array_equal(idle_cells.X.toarray() if hasattr(idle_cells.X, "toarray")
                                  else idle_cells.X,
                                  busy_cells.X.toarray() if hasattr(busy_cells.X, "toarray")
                                  else busy_cells.X)
