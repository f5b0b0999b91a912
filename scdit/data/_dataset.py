"""Batches of cells from a (sparse) matrix, densified one minibatch at a time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler


class CellDataset(Dataset):
    """Cells as rows of a CSR (or dense) model-input matrix plus encoded conditions.

    ``dataset[list_of_rows]`` returns a dict batch: ``x`` ``(B, G)`` float32, ``atoms`` ``(B, M)``
    and ``covariates`` ``(B, K)`` int64, ``dose`` ``(B, M)`` float32 when doses are given. Only the
    requested rows are densified.

    With a source (``source_X`` rows of control cells and their ``source_context`` ids), each
    batch also holds ``x_src`` ``(B, G)``: for every cell, a control cell drawn at random from the
    same context (``context`` ids of the cells), and ``ctx`` ``(B,)``, the context ids (pairs
    are then re-matched by optimal transport within each context of the minibatch). With
    ``fixed_source=True`` the draw depends only on the requested rows (validation).

    ``rows``: the dataset's cells are these rows of ``X`` (sorted), which is then not copied;
    ``atoms``, ``covariates``, ``dose`` and ``context`` describe the dataset's cells.
    """

    def __init__(self, X, atoms: np.ndarray, covariates: np.ndarray, *,
                 dose: np.ndarray | None = None, context: np.ndarray | None = None,
                 source_X=None, source_context: np.ndarray | None = None, seed: int = 0,
                 fixed_source: bool = False, rows: np.ndarray | None = None):
        self.X = _as_matrix(X)
        self.index = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self.index is not None and self.index.size > 1 and np.any(np.diff(self.index) <= 0):
            raise ValueError("rows must be strictly increasing.")
        self.atoms = torch.as_tensor(atoms, dtype=torch.long)
        self.covariates = torch.as_tensor(covariates, dtype=torch.long)
        self.dose = None if dose is None else torch.as_tensor(dose, dtype=torch.float32)
        if not (len(self) == len(self.atoms) == len(self.covariates)):
            raise ValueError("X, atoms and covariates must have the same number of rows.")
        self.source_X = None if source_X is None else _as_matrix(source_X)
        self.context = None if context is None else np.asarray(context, dtype=np.int64)
        self.pools: dict[int, np.ndarray] = {}
        if self.source_X is not None:
            if self.context is None or source_context is None:
                raise ValueError("A source needs context ids for cells and source cells.")
            sc = np.asarray(source_context, dtype=np.int64)
            self.pools = {int(c): np.flatnonzero(sc == c) for c in np.unique(sc)}
            missing = sorted(set(np.unique(self.context).tolist()) - set(self.pools))
            if missing:
                raise ValueError(f"No source (control) cells for context id(s) {missing}.")
        self.seed = int(seed)
        self.fixed_source = fixed_source
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.X.shape[0] if self.index is None else len(self.index)

    def __getitem__(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        x = self.X[rows] if self.index is None else self.X[self.index[rows]]
        batch = {"x": dense_tensor(x), "atoms": self.atoms[rows],
                 "covariates": self.covariates[rows]}
        if self.dose is not None:
            batch["dose"] = self.dose[rows]
        if self.source_X is not None:
            rng = np.random.default_rng([self.seed, int(rows[0]), len(rows)]) \
                if self.fixed_source else self._rng
            batch.update(source_batch(self.source_X, self.pools, self.context[rows], rng))
        return batch


def source_batch(source_X, pools: dict[int, np.ndarray], ctx: np.ndarray,
                 rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``x_src``: for each cell, a source cell drawn at random (with replacement) from the pool
    of its context (``pools``: context id → rows of ``source_X``); ``ctx``: the context ids."""
    src = np.empty(len(ctx), dtype=np.int64)
    for c in np.unique(ctx):
        m = ctx == c
        src[m] = rng.choice(pools[int(c)], int(m.sum()), replace=True)
    return {"x_src": dense_tensor(source_X[src]), "ctx": torch.as_tensor(ctx)}


def _as_matrix(X):
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)


def dense_tensor(sub) -> torch.Tensor:
    """Rows of a CSR or dense matrix as a contiguous float32 tensor ``(n, G)``."""
    dense = sub.toarray() if sp.issparse(sub) else sub
    return torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))


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
