"""Sparse-aware cell dataset, loader, and source cells drawn from the same context."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scdit.data import CellDataset, make_loader


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


def test_dataset_draws_source_from_same_context():
    X = np.arange(8, dtype=np.float32)[:, None].repeat(2, 1)
    src = np.array([[100.0, 100.0], [200.0, 200.0]], np.float32)
    ds = CellDataset(X, np.ones((8, 1)), np.zeros((8, 0)), context=np.array([0, 1] * 4),
                     source_X=src, source_context=np.array([0, 1]), seed=0)
    b = ds[list(range(8))]
    assert torch.all(b["x_src"][b["ctx"] == 0] == 100) and torch.all(b["x_src"][b["ctx"] == 1] == 200)
    with pytest.raises(ValueError, match="No source"):
        CellDataset(X, np.ones((8, 1)), np.zeros((8, 0)), context=np.array([0, 2] * 4),
                    source_X=src, source_context=np.array([0, 1]))
