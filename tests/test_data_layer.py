"""Data layer: vocabularies, representations, sparse-aware dataset and loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scdit.data._dataset import CellDataset, make_loader
from scdit.data._representation import (
    counts_to_log1p,
    detect_representation,
    library_size,
    log1p_to_counts,
    to_log1p,
)
from scdit.data._vocab import ConditionVocab, CovariateVocab, split_label

LABELS = ["ctrl", "A", "B", "C", "A+B", "ctrl", "A"]


# ---------------------------------------------------------------- condition vocabulary
def test_condition_vocab_atoms_and_order_free_combos():
    vocab = ConditionVocab.build(LABELS, "ctrl")
    assert vocab.atoms == ("A", "B", "C")
    assert set(vocab.conditions) == {"ctrl", "A", "B", "C", "A+B"}
    enc = vocab.encode(["A+B", "B+A", " B + A ", "ctrl", "A", "ctrl+A"])
    assert enc.shape == (6, 2)
    assert np.array_equal(enc[0], enc[1]) and np.array_equal(enc[0], enc[2])
    assert sorted(enc[0].tolist()) == [1, 2]  # atom rows start at 1
    assert np.array_equal(enc[3], [0, 0])  # control: no atoms
    assert np.array_equal(enc[4], [1, 0]) and np.array_equal(enc[5], [1, 0])
    assert vocab.encode(["A"], max_members=3).shape == (1, 3)
    # B+C was never seen as a condition but its atoms were: encodable
    assert sorted(vocab.encode(["C+B"])[0].tolist()) == [2, 3]


def test_split_label_and_separator():
    assert split_label("B+A", "ctrl") == ("A", "B")
    assert split_label("ctrl", "ctrl") == ()
    assert split_label("A+ctrl", "ctrl") == ("A",)
    vocab = ConditionVocab.build(["NT", "x|y", "y"], "NT", separator="|")
    assert vocab.atoms == ("x", "y")
    assert np.array_equal(vocab.encode(["y|x"]), vocab.encode(["x|y"]))
    # with the '|' separator "A+B" is one atom
    assert ConditionVocab.build(["NT", "A+B"], "NT", separator="|").atoms == ("A+B",)


def test_condition_vocab_unknown_and_round_trip():
    vocab = ConditionVocab.build(LABELS, "ctrl")
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['Z'\]"):
        vocab.encode(["A", "Z+A"])
    assert vocab.unknown_atoms(["Z+A", "Y"]) == ["Y", "Z"]
    again = ConditionVocab.from_dict(vocab.to_dict())
    assert again == vocab


def test_covariate_vocab():
    obs = pd.DataFrame({"cell_type": pd.Categorical(["T", "B", "T"]), "batch": [1, 2, 1]})
    covs = CovariateVocab.build(obs, ["cell_type", "batch"])
    assert covs.keys == ("cell_type", "batch") and covs.sizes() == [3, 3]
    codes = covs.encode(obs)
    assert codes.tolist() == [[2, 1], [1, 2], [2, 1]]  # sorted categories, 0 reserved
    with pytest.raises(KeyError, match=r"Unknown value\(s\) \['NK'\] for covariate 'cell_type'"):
        covs.encode(pd.DataFrame({"cell_type": ["NK"], "batch": ["1"]}))
    with pytest.raises(KeyError, match="Covariate 'batch' is required"):
        covs.encode(pd.DataFrame({"cell_type": ["T"]}))
    assert CovariateVocab.from_dict(covs.to_dict()) == covs


# ---------------------------------------------------------------- representation
def test_detect_representation():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (30, 8)).astype(np.float32)
    assert detect_representation(counts) == "counts"
    assert detect_representation(sp.csr_matrix(counts)) == "counts"
    log = counts_to_log1p(counts)
    assert detect_representation(log) == "log1p"
    assert detect_representation(sp.csr_matrix(log)) == "log1p"


def test_counts_to_log1p_sparse_matches_dense_and_log1p_unchanged():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (30, 8)).astype(np.float32)
    counts[3] = 0  # empty cell stays zero
    dense = counts_to_log1p(counts)
    sparse = counts_to_log1p(sp.csr_matrix(counts))
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-6)
    assert np.all(dense[3] == 0)
    lib = library_size(counts)
    np.testing.assert_allclose(np.expm1(dense[0]).sum(), 1e4, rtol=1e-4)
    assert lib[0] == counts[0].sum()
    assert to_log1p(dense, "log1p") is not None
    np.testing.assert_array_equal(to_log1p(dense), dense)


def test_log1p_to_counts_inverse_and_unbiased():
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (50, 20)).astype(np.float64)
    lib = library_size(counts)
    back = log1p_to_counts(counts_to_log1p(counts), lib, rng=np.random.default_rng(1))
    assert np.all(back >= 0) and np.array_equal(back, np.round(back))
    assert np.mean(back == counts) > 0.99
    # stochastic rounding keeps the expected count (unbiased="counts") ...
    x = np.full((20000, 1), np.log1p(2.3e4 / 1e4 * 1.37), dtype=np.float32)  # mu = 1.37 * 2.3
    draws = log1p_to_counts(x, np.full(20000, 1e4), rng=np.random.default_rng(2),
                            unbiased="counts")
    assert set(np.unique(draws)) <= {3.0, 4.0}
    assert draws.mean() == pytest.approx(2.3 * 1.37, abs=0.02)
    # ... or, by default, the expected log1p-normalised value: at a library of 200 a value
    # between the levels of 0 and 1 UMI (0 and log1p(50)) keeps its mean after rounding
    lib200 = np.full(40000, 200.0)
    x = np.full((40000, 1), 1.3)
    draws = log1p_to_counts(x, lib200, rng=np.random.default_rng(3))
    assert set(np.unique(draws)) <= {0.0, 1.0}
    back = np.log1p(draws * 1e4 / lib200[:, None])
    assert back.mean() == pytest.approx(1.3, abs=0.02)
    assert draws.mean() == pytest.approx(1.3 / np.log1p(50.0), abs=0.01)
    counts_way = log1p_to_counts(x, lib200, rng=np.random.default_rng(3), unbiased="counts")
    assert np.log1p(counts_way * 50.0).mean() < 0.5  # rounding in count space: biased low
    with pytest.raises(ValueError, match="unbiased"):
        log1p_to_counts(x, lib200, unbiased="mean")
    # negative log1p (from a generator overshoot) is clipped to zero counts
    assert np.all(log1p_to_counts(np.full((2, 3), -1.0), np.ones(2) * 1e4) == 0)


# ---------------------------------------------------------------- dataset and loader
def _dataset(sparse: bool = True, n: int = 23):
    rng = np.random.default_rng(0)
    X = rng.poisson(0.5, (n, 7)).astype(np.float32)
    X[:, 0] = np.arange(n)  # row id in column 0
    atoms = np.stack([np.arange(n), np.zeros(n, np.int64)], 1)
    covs = (np.arange(n) % 3)[:, None]
    return CellDataset(sp.csr_matrix(X) if sparse else X, atoms, covs), X


def test_sparse_batches_are_the_right_rows_densified_per_batch():
    ds, X = _dataset(sparse=True)
    assert sp.issparse(ds.X) and ds.X.dtype == np.float32  # whole matrix stays sparse
    batch = ds[[7, 2, 19]]
    assert isinstance(batch["x"], torch.Tensor) and batch["x"].shape == (3, 7)
    rows = batch["x"][:, 0].long().tolist()
    assert rows == sorted([7, 2, 19])
    np.testing.assert_array_equal(batch["x"].numpy(), X[rows])
    assert batch["atoms"][:, 0].tolist() == rows  # conditions stay aligned with the rows
    assert batch["covariates"][:, 0].tolist() == [r % 3 for r in rows]
    assert batch["atoms"].dtype == torch.long and batch["x"].dtype == torch.float32
    dense_ds, _ = _dataset(sparse=False)
    assert torch.equal(dense_ds[[7, 2, 19]]["x"], batch["x"])
    with pytest.raises(ValueError, match="same number of rows"):
        CellDataset(X, np.zeros((3, 1)), np.zeros((23, 0)))


def _epoch(loader):
    return [b["x"][:, 0].long().tolist() for b in loader]


def test_make_loader_is_deterministic_and_covers_every_row():
    ds, _ = _dataset()
    a = _epoch(make_loader(ds, 5, shuffle=True, seed=3))
    b = _epoch(make_loader(ds, 5, shuffle=True, seed=3))
    c = _epoch(make_loader(ds, 5, shuffle=True, seed=4))
    assert a == b and a != c
    assert sorted(r for batch in a for r in batch) == list(range(23))
    assert [len(batch) for batch in a] == [5, 5, 5, 5, 3]
    assert _epoch(make_loader(ds, 5, shuffle=False)) == [list(range(i, min(i + 5, 23)))
                                                          for i in range(0, 23, 5)]
    dropped = _epoch(make_loader(ds, 5, shuffle=True, seed=3, drop_last=True))
    assert [len(batch) for batch in dropped] == [5, 5, 5, 5]
    # a batch larger than the dataset is clipped to one full batch, even with drop_last
    assert [len(b["x"]) for b in make_loader(ds, 100, shuffle=True, drop_last=True)] == [23]
