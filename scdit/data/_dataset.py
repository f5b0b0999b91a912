"""Batches of cells from a (sparse) matrix, densified one minibatch at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler


class CellDataset(Dataset):
    """Cells as rows of a CSR (or dense) log1p matrix plus encoded conditions.

    ``dataset[list_of_rows]`` returns a dict batch: ``x`` ``(B, G)`` float32, ``atoms`` ``(B, M)``
    and ``covariates`` ``(B, K)`` int64. Only the requested rows are densified.
    """

    def __init__(self, X, atoms: np.ndarray, covariates: np.ndarray):
        self.X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
        self.atoms = torch.as_tensor(atoms, dtype=torch.long)
        self.covariates = torch.as_tensor(covariates, dtype=torch.long)
        if not (self.X.shape[0] == len(self.atoms) == len(self.covariates)):
            raise ValueError("X, atoms and covariates must have the same number of rows.")

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        sub = self.X[rows]
        dense = sub.toarray() if sp.issparse(sub) else sub
        return {"x": torch.from_numpy(np.ascontiguousarray(dense)),
                "atoms": self.atoms[rows], "covariates": self.covariates[rows]}


def make_loader(dataset: CellDataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader yielding whole minibatches (one sparse slice per batch), seeded shuffling."""
    if shuffle:
        gen = torch.Generator().manual_seed(seed)
        base = RandomSampler(range(len(dataset)), generator=gen)
    else:
        base = SequentialSampler(range(len(dataset)))
    bs = max(1, min(batch_size, len(dataset)))
    sampler = BatchSampler(base, batch_size=bs, drop_last=drop_last and len(dataset) > bs)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)
