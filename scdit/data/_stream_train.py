"""Training minibatches streamed from on-disk cells, in the form :class:`CellDataset` gives.

:class:`StreamedTrainingSet` wraps :class:`StreamedCells` (scDataset's block-shuffled reads of a
:class:`CellStore`) and turns each minibatch of rows into the dict batch the flow's training
step takes: the model input of the cells (through the tokenizer's ``prepare``), their encoded
conditions, covariates and doses, and, with a control source, a control cell of the same
context for every cell, drawn from an in-memory pool. :class:`StreamLoader` is the torch
``DataLoader`` over it whose position Lightning saves in checkpoints.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ._dataset import dense_tensor, source_batch
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
    Iterated through :class:`StreamLoader`, which sets the epoch (the order depends only on
    ``seed`` and the epoch). Under DDP every rank reads its share of the fetches and the loader
    stops after as many batches as the rank with the fewest, so that all ranks step together;
    DataLoader workers split a rank's fetches.
    """

    def __init__(self, store: CellStore, rows: np.ndarray, *, columns: np.ndarray,
                 prepare: Callable[[np.ndarray], Any], atoms: np.ndarray, covariates: np.ndarray,
                 dose: np.ndarray | None = None, context: np.ndarray | None = None,
                 source_X=None, source_context: np.ndarray | None = None, log1p: bool = False,
                 batch_size: int = 256, seed: int = 0, block_size: int = 64,
                 fetch_factor: int = 16):
        n_rows = store.n_obs if rows is None else len(rows)
        self.cells = StreamedCells(store, batch_size=max(1, min(int(batch_size), n_rows)),
                                   rows=rows, genes=columns, log1p=log1p, seed=seed,
                                   block_size=block_size, fetch_factor=fetch_factor,
                                   drop_last=True)
        self.max_fetch, self.max_block = int(fetch_factor), int(block_size)
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
        self.epoch = 0  # the epoch being (or next to be) iterated, set by StreamLoader

    @property
    def batch_size(self) -> int:
        """Cells per minibatch."""
        return self.cells.batch_size

    @property
    def n_cells(self) -> int:
        """Training cells (an epoch visits each at most once; with several ranks, the last
        fetch of the ranks with one more fetch than others is left out)."""
        return self.cells.n_cells

    def set_rank(self, rank: int, world_size: int) -> None:
        """The DDP rank and world size to read for (read by the loader in the training process,
        so that DataLoader workers, however started, read the rank's share)."""
        self.cells.rank, self.cells.world_size = int(rank), int(world_size)
        # several ranks: at least 8 fetches each where the data allow, so that ranks differ by
        # at most one fetch of few batches and every rank has some; blocks no larger than a
        # 16th of a fetch, so that a batch still mixes many places of the store
        n_batches = self.n_cells // self.batch_size
        ff = self.max_fetch if world_size == 1 else \
            max(1, min(self.max_fetch, n_batches // (8 * world_size)))
        self.cells.fetch_factor = ff
        self.cells.block_size = max(1, min(self.max_block, ff * self.batch_size // 16))

    def __len__(self) -> int:
        """Batches per epoch of this rank (the same on every rank: that of the rank with the
        fewest)."""
        if self.cells.world_size is None:
            self.set_rank(*_rank_world())
        n = min(self.cells.rank_lengths(self.cells.world_size))
        if n == 0:
            raise ValueError(
                f"{self.n_cells} training cells make no full batch of {self.batch_size} cells "
                f"in each of {self.cells.world_size} processes; lower TrainConfig.batch_size or "
                "the number of devices.")
        return n

    def __iter__(self):
        """This worker's share of this rank's batches of epoch :attr:`epoch`.

        The source draws of each batch depend only on (seed, rank, epoch, worker, batch), so
        that skipping batches (resuming) and the number of ranks do not change the others.
        """
        rank = self.cells.rank if self.cells.rank is not None else _rank_world()[0]
        info = get_worker_info()
        worker = 0 if info is None else info.id
        self.cells.set_epoch(self.epoch)
        for j, (x, rows) in enumerate(self.cells):
            rng = np.random.default_rng([self.seed, rank, self.epoch, worker, j]) \
                if self.source_X is not None else None
            yield self._batch(x.numpy(), rows.numpy(), rng)

    def _batch(self, x: np.ndarray, rows: np.ndarray, rng) -> dict[str, torch.Tensor]:
        model_in = self.prepare(x)
        batch = {"x": dense_tensor(model_in), "atoms": self.atoms[rows],
                 "covariates": self.covariates[rows]}
        if self.dose is not None:
            batch["dose"] = self.dose[rows]
        if self.source_X is not None:
            batch.update(source_batch(self.source_X, self.pools, self.context[rows], rng))
        return batch


class StreamLoader(DataLoader):
    """The ``DataLoader`` of a :class:`StreamedTrainingSet`: whole batches, read in this process
    (``num_workers=0``) or in worker processes that each read their share of the fetches.

    Each iteration is the next epoch and yields the rank's :func:`len` batches (equal on every
    DDP rank). Lightning saves :meth:`state_dict` (the epoch and the batches handed out) in
    checkpoints; a resumed run skips the batches already trained on.
    """

    def __init__(self, dataset: StreamedTrainingSet, *, seed: int = 0, num_workers: int = 0):
        super().__init__(dataset, batch_size=None, num_workers=int(num_workers),
                         generator=torch.Generator().manual_seed(int(seed)))
        self._next_epoch = 0
        self._skip = 0
        self._epoch = 0
        self._done = 0

    def __iter__(self):
        self.dataset.set_rank(*_rank_world())  # here, before any worker starts
        n = len(self.dataset)
        epoch, skip = self._next_epoch, self._skip
        if skip >= n:  # resumed at the end of an epoch: the next one
            epoch, skip = epoch + 1, 0
        self._epoch, self._done, self._next_epoch, self._skip = epoch, skip, epoch + 1, 0
        self.dataset.epoch = epoch  # workers get their copy of the dataset after this
        for i, batch in enumerate(itertools.islice(super().__iter__(), n)):  # no batch n + 1
            if i < skip:  # trained on before the run was interrupted
                continue
            self._done = i + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch in progress and the batches of it handed out."""
        return {"epoch": self._epoch, "done": self._done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`) at the next iteration."""
        self._next_epoch, self._skip = int(state["epoch"]), int(state["done"])
