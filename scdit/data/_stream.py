"""Streamed, block-shuffled minibatches of on-disk cells for torch, on scDataset.

The sampling (contiguous blocks of rows in shuffled order, then the rows of a fetched set of
blocks shuffled), the fetch-then-batch pipeline and the split of the work among DataLoader
workers and DDP ranks are scDataset's (the ``large`` extra: ``pip install "scdit[large]"``);
this module only tells it how to read a :class:`CellStore` and what to yield.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import IterableDataset

from ._ondisk import CellStore
from ._representation import TARGET_SUM, counts_to_log1p


def _scdataset():
    try:
        import scdataset
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "streaming on-disk cells needs scDataset: pip install 'scdit[large]' "
            "(or pip install scdataset).") from err
    return scdataset


class StreamedCells(IterableDataset):
    """Shuffled minibatches of on-disk cells: ``(x, rows)`` with dense float32 ``x``.

    Each epoch visits every selected row once. Rows are drawn in contiguous blocks of
    ``block_size`` whose order is shuffled; ``fetch_factor`` batches' worth of blocks are read
    at once (sorted, for sequential disk access) and their rows shuffled into minibatches. The
    order is a function of ``seed`` and the epoch (:meth:`set_epoch`) only, the same in every
    DataLoader worker and DDP rank (which each take their share of the fetches).

    Parameters
    ----------
    store
        Cells from :func:`open_cells`.
    batch_size
        Cells per minibatch (the last batch of each fetch may be smaller unless ``drop_last``).
    block_size
        Contiguous rows drawn together: larger blocks read faster, smaller ones shuffle better.
    fetch_factor
        Batches read at a time (memory: ``batch_size × fetch_factor`` dense rows).
    seed
        Seed of the order.
    rows
        Global row indices to draw from (default: all rows), e.g. a training split.
    genes
        Gene (column) indices to keep, e.g. from :func:`select_hvg` (default: all).
    log1p
        Normalise each cell to ``target_sum`` and take ``log1p`` (for stores of counts), on the
        full row before ``genes`` are selected.
    target_sum
        Library size used with ``log1p``.
    drop_last
        Drop batches smaller than ``batch_size``.

    Notes
    -----
    Iterating yields ``(x, rows)``: ``x`` a float32 tensor ``(b, n_genes)``, ``rows`` an int64
    tensor of the global row indices of its cells (to look up their labels in ``store.obs``).
    Call :meth:`set_epoch` before each epoch, as for a ``DistributedSampler``; iterating again
    without it repeats the order. Use it in a ``DataLoader`` with ``batch_size=None``.
    """

    def __init__(
        self,
        store: CellStore,
        *,
        batch_size: int = 256,
        block_size: int = 64,
        fetch_factor: int = 16,
        seed: int = 0,
        rows: Sequence[int] | np.ndarray | None = None,
        genes: Sequence[int] | np.ndarray | None = None,
        log1p: bool = False,
        target_sum: float = TARGET_SUM,
        drop_last: bool = False,
    ):
        if not isinstance(store, CellStore):
            raise TypeError(f"store must be a CellStore (from open_cells), got "
                            f"{type(store).__name__}.")
        for name, v in (("batch_size", batch_size), ("block_size", block_size),
                        ("fetch_factor", fetch_factor)):
            if int(v) < 1:
                raise ValueError(f"{name} must be positive, got {v}.")
        self.store = store
        self.batch_size, self.block_size = int(batch_size), int(block_size)
        self.fetch_factor, self.seed = int(fetch_factor), int(seed)
        self.rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        if self.rows is not None and self.rows.size and (
                self.rows[0] < 0 or self.rows[-1] >= store.n_obs):
            raise IndexError(f"rows must lie in [0, {store.n_obs}).")
        self.genes = None if genes is None else np.asarray(genes, dtype=np.int64)
        if self.genes is not None and self.genes.size and (
                self.genes.min() < 0 or self.genes.max() >= store.n_vars):
            raise IndexError(f"genes must lie in [0, {store.n_vars}).")
        self.log1p, self.target_sum, self.drop_last = bool(log1p), float(target_sum), drop_last
        self.epoch = 0
        self.rank: int | None = None  # DDP rank and world size (None: detected when iterated)
        self.world_size: int | None = None
        _scdataset()  # fail early, with the install hint, when the extra is missing

    @property
    def n_cells(self) -> int:
        """Cells visited per epoch."""
        return self.store.n_obs if self.rows is None else int(self.rows.size)

    @property
    def n_genes(self) -> int:
        """Width of the yielded rows."""
        return self.store.n_vars if self.genes is None else int(self.genes.size)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of the next iteration (epoch ``e`` of ``seed``)."""
        self.epoch = int(epoch)

    def _epoch_seed(self) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])

    def _dataset(self, rank: int | None = None, world_size: int | None = None):
        if rank is None and world_size is None:
            rank, world_size = self.rank, self.world_size
        scd = _scdataset()
        strategy = scd.BlockShuffling(block_size=self.block_size, indices=self.rows)
        return scd.scDataset(
            self.store, strategy, batch_size=self.batch_size, fetch_factor=self.fetch_factor,
            drop_last=self.drop_last, fetch_callback=self._fetch,
            batch_callback=_take, seed=self._epoch_seed(), rank=rank, world_size=world_size)

    def rank_lengths(self, world_size: int) -> list[int]:
        """Batches each of ``world_size`` DDP ranks gets in an epoch (scDataset deals the
        fetches out in turn, so the counts may differ by a fetch)."""
        return [len(self._dataset(r, world_size)) for r in range(int(world_size))]

    def _fetch(self, store: CellStore, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        X = store.read(rows)
        if self.log1p:
            X = counts_to_log1p(X, target_sum=self.target_sum)
        if self.genes is not None:
            X = X[:, self.genes]
        dense = X.toarray() if sp.issparse(X) else X
        return np.ascontiguousarray(dense, dtype=np.float32), rows

    def __len__(self) -> int:
        return len(self._dataset())

    def __iter__(self):
        for x, rows in self._dataset():
            yield torch.from_numpy(x), torch.from_numpy(rows)


def _take(fetched: tuple[np.ndarray, np.ndarray], idx: np.ndarray):
    x, rows = fetched
    return np.ascontiguousarray(x[idx]), rows[idx]
