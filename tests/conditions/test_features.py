"""Perturbation features: reading user tables, the feature table, data-derived features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scdit.conditions import data_features, feature_table, read_features


def test_read_features_forms(tmp_path):
    d = {"A": [1.0, 2.0], "B": [3.0, 4.0]}
    df = read_features(d)
    assert list(df.index) == ["A", "B"] and df.shape == (2, 2)
    path = tmp_path / "f.csv"
    df.to_csv(path)
    assert np.allclose(read_features(path).to_numpy(), df.to_numpy())
    assert np.allclose(read_features(str(path)).to_numpy(), df.to_numpy())
    with pytest.raises(ValueError, match="NaN"):
        read_features(pd.DataFrame({"x": [1.0, np.nan]}, index=["A", "B"]))
    with pytest.raises(ValueError, match="duplicated"):
        read_features(pd.DataFrame({"x": [1.0, 2.0]}, index=["A", "A"]))
    with pytest.raises(ValueError, match="numeric"):
        read_features(pd.DataFrame({"x": ["a", "b"]}, index=["A", "B"]))
    with pytest.raises(FileNotFoundError):
        read_features(tmp_path / "missing.csv")
    with pytest.raises(TypeError):
        read_features(3)


def test_feature_table_orders_seen_first_and_standardises():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 10.0], "y": [0.0, 0.0, 0.0, 1.0]},
                      index=["C", "A", "B", "Z"])
    table, featured, _ = feature_table(df, ["A", "B", "C"])
    assert featured == ["Z"]
    assert table.shape == (4, 2)
    assert np.allclose(table[:3, 0].mean(), 0.0, atol=1e-6)  # standardised on the seen rows
    assert np.allclose(table[:3, 1], 0.0)  # constant column: SD replaced by 1
    with pytest.raises(ValueError, match=r"no row for 1 perturbation.*\['Q'\]"):
        feature_table(df, ["A", "Q"])


def test_feature_table_fills_seen_rows_without_features_with_zeros():
    """Seen atoms without a row (data-derived features: not measured genes) get exactly zero,
    which the encoder reads as "no features"; the others are standardised among themselves."""
    df = pd.DataFrame([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0], [7.0, 9.0]],
                      index=["A", "B", "G1", "G2"])
    table, featured, stats = feature_table(df, ["A", "B", "X", "Y"], source="data",
                                           fill_missing=True)
    assert featured == ["G1", "G2"] and stats["n_filled"] == 2
    assert np.all(table[2:4] == 0)  # X, Y
    np.testing.assert_allclose(table[:2], [[-1.0, 1.0], [1.0, -1.0]])  # over A and B only
    # one seen atom with a row: standardised over every row that has features, not zeroed
    table, _, _ = feature_table(df, ["A", "X"], source="data", fill_missing=True)
    assert np.all(table[1] == 0) and np.all(table[0] != 0)


def test_data_features_correlations(log1p_adata):
    X = log1p_adata.X
    f = data_features(X, log1p_adata.var_names, n_components=5)
    assert f.shape == (50, 7)
    assert list(f.index[:2]) == ["G0", "G1"]
    corr = f.filter(like="_corr").to_numpy()
    assert np.all(np.abs(corr) <= 1.0 + 1e-6)
    # genes of the same programme (G10..G14 go up together under G1) have similar profiles
    sim = np.corrcoef(corr[list(range(10, 15)) + list(range(40, 45))])
    within = sim[:5, :5][np.triu_indices(5, 1)].mean()
    between = np.abs(sim[:5, 5:]).mean()
    assert within > 0.6 and within > between + 0.3
