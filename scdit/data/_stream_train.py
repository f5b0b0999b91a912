"""Training minibatches streamed from on-disk cells, in the form :class:`CellDataset` gives.

:class:`StreamedTrainingSet` wraps :class:`StreamedCells` (scDataset's block-shuffled reads of a
:class:`CellStore`) and turns each minibatch of rows into the dict batch the flow's training
step takes: the model input of the cells (through the tokenizer's ``prepare``), their encoded
conditions, covariates and doses, and, with a control source, a control cell of the same
context for every cell, drawn from an in-memory pool. :class:`StreamLoader` is the torch
``DataLoader`` over it whose position Lightning saves in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, IterableDataset

from ._dataset import dense_tensor
from ._ondisk import CellStore
from ._stream import StreamedCells


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StreamedTrainingSet(IterableDataset):
    """Shuffled training minibatches of on-disk cells as dict batches (see :class:`CellDataset`).

    Parameters
    ----------
    store
        The cells (:func:`open_cells`).
    rows
        Global rows to train on (e.g. all but the validation cells).
    columns
        Gene columns read for each cell, in the order ``prepare`` expects.
    prepare
        Maps a dense float32 ``(b, len(columns))`` block of log1p expression to the model input
        ``(b, n_features)`` (the fitted tokenizer's ``prepare``).
    atoms, covariates, dose, context
        Per-cell encoded conditions ``(n_obs, M)``, covariate codes ``(n_obs, K)``, doses
        ``(n_obs, M)`` or ``None`` and covariate-context ids ``(n_obs,)`` (needed with a source),
        indexed by global row.
    source_X, source_context
        With a control source: the pool of control cells in the model input (CSR or dense) and
        their context ids; every batch then holds ``x_src`` (a pool cell of each cell's context,
        drawn at random) and ``ctx``.
    log1p
        The store holds counts: normalise each cell and take ``log1p`` before ``columns``.
    batch_size, seed, block_size, fetch_factor
        As for :class:`StreamedCells`; incomplete batches are dropped.

    Notes
    -----
    Each iteration is the next epoch (the order depends only on ``seed`` and the epoch). Under
    DDP every rank reads its share of the fetches and stops after as many batches as the rank
    with the fewest, so that all ranks step together; the source draws then depend on the rank.
    """

    def __init__(self, store: CellStore, rows: np.ndarray, *, columns: np.ndarray,
                 prepare: Callable[[np.ndarray], Any], atoms: np.ndarray, covariates: np.ndarray,
                 dose: np.ndarray | None = None, context: np.ndarray | None = None,
                 source_X=None, source_context: np.ndarray | None = None, log1p: bool = False,
                 batch_size: int = 256, seed: int = 0, block_size: int = 64,
                 fetch_factor: int = 16):
        self.cells = StreamedCells(store, batch_size=batch_size, rows=rows, genes=columns,
                                   log1p=log1p, seed=seed, block_size=block_size,
                                   fetch_factor=fetch_factor, drop_last=True)
        self.prepare = prepare
        self.atoms = torch.as_tensor(atoms, dtype=torch.long)
        self.covariates = torch.as_tensor(covariates, dtype=torch.long)
        self.dose = None if dose is None else torch.as_tensor(dose, dtype=torch.float32)
        self.context = None if context is None else np.asarray(context, dtype=np.int64)
        self.source_X = None
        self.pools: dict[int, np.ndarray] = {}
        if source_X is not None:
            if self.context is None or source_context is None:
                raise ValueError("A source needs context ids for cells and source cells.")
            self.source_X = sp.csr_matrix(source_X, dtype=np.float32) if sp.issparse(source_X) \
                else np.asarray(source_X, np.float32)
            sc = np.asarray(source_context, dtype=np.int64)
            self.pools = {int(c): np.flatnonzero(sc == c) for c in np.unique(sc)}
            missing = sorted(set(np.unique(self.context[self.cells.rows]).tolist()) - set(self.pools))
            if missing:
                raise ValueError(f"No source (control) cells for context id(s) {missing}.")
        self.seed = int(seed)
        self.epoch = 0  # the next iteration's epoch
        self.done = 0  # batches handed out in the current epoch
        self._rng = np.random.default_rng(self.seed)
        self._ranked = False
        self._skip = 0

    @property
    def batch_size(self) -> int:
        """Cells per minibatch."""
        return self.cells.batch_size

    @property
    def n_cells(self) -> int:
        """Training cells (visited once an epoch, across all ranks)."""
        return self.cells.n_cells

    def __len__(self) -> int:
        """Batches per epoch of this rank."""
        return min(self.cells.rank_lengths(_rank_world()[1]))

    def _rank_rng(self) -> None:
        rank, world = _rank_world()
        if world > 1 and not self._ranked:  # a different stream of source draws per rank
            self._rng = np.random.default_rng([self.seed, rank])
        self._ranked = True

    def __iter__(self):
        self._rank_rng()
        n = len(self)
        epoch, skip = self.epoch, self._skip
        if skip >= n:  # resumed at the end of an epoch: the next one
            epoch, skip = epoch + 1, 0
        self.epoch, self._skip, self.done = epoch + 1, 0, skip
        self.cells.set_epoch(epoch)
        for i, (x, rows) in enumerate(self.cells):
            if i >= n:
                break
            if i < skip:  # resuming inside an epoch: these batches were trained on
                continue
            self.done = i + 1
            yield self._batch(x.numpy(), rows.numpy())

    def _batch(self, x: np.ndarray, rows: np.ndarray) -> dict[str, torch.Tensor]:
        model_in = self.prepare(x)
        batch = {"x": dense_tensor(model_in), "atoms": self.atoms[rows],
                 "covariates": self.covariates[rows]}
        if self.dose is not None:
            batch["dose"] = self.dose[rows]
        if self.source_X is not None:
            ctx = self.context[rows]
            src = np.empty(len(rows), dtype=np.int64)
            for c in np.unique(ctx):
                m = ctx == c
                src[m] = self._rng.choice(self.pools[int(c)], int(m.sum()), replace=True)
            batch["x_src"] = dense_tensor(self.source_X[src])
            batch["ctx"] = torch.as_tensor(ctx)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch in progress, the batches handed out in it and the source draws' state."""
        return {"epoch": self.epoch - 1 if self.epoch else 0, "done": self.done,
                "rng": self._rng.bit_generator.state, "ranked": self._ranked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`) at the next iteration."""
        self.epoch, self._skip = int(state["epoch"]), int(state["done"])
        self._rng.bit_generator.state = state["rng"]
        self._ranked = bool(state.get("ranked", False))


class StreamLoader(DataLoader):
    """The ``DataLoader`` of a :class:`StreamedTrainingSet` (whole batches, read in this
    process); Lightning saves its :meth:`state_dict` in checkpoints and restores it on resume."""

    def __init__(self, dataset: StreamedTrainingSet, *, seed: int = 0):
        super().__init__(dataset, batch_size=None, num_workers=0,
                         generator=torch.Generator().manual_seed(int(seed)))

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream (see :meth:`StreamedTrainingSet.state_dict`)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``."""
        self.dataset.load_state_dict(state)
