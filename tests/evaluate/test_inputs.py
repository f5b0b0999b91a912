"""evaluate checks the training cells like pred and real (see also tests/model/
test_bad_input_matrix.py and test_evaluate.py::test_gene_alignment): non-finite or negative
values are refused, naming `train` and the cells and genes affected, before any work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from scdit.evaluate import evaluate

G = 30


def _cells(seed: int = 0, n: int = 40) -> AnnData:
    rng = np.random.default_rng(seed)
    labels = np.repeat(["ctrl", "A", "B"], n)
    X = np.maximum(1.5 + rng.normal(0, 0.4, (len(labels), G)), 0)
    X[labels == "A", :5] += 1.0
    obs = pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))])
    return AnnData(X.astype(np.float32), obs=obs,
                   var=pd.DataFrame(index=[f"g{j}" for j in range(G)]))


@pytest.mark.parametrize(("value", "phrase"), [(np.nan, "2 NaN"), (np.inf, "2 infinite"),
                                               (-1.0, "2 negative")])
def test_train_with_bad_values_is_refused(value, phrase):
    real, pred, train = _cells(0), _cells(1), _cells(2)
    train.X[[3, 50], 7] = value
    with pytest.raises(ValueError, match=rf"`train`.X holds .*{phrase}.* in 2 cell\(s\) and 1 "
                                         r"gene\(s\)"):
        evaluate(pred, real, "condition", train=train)
