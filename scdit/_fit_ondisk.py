"""``scdit.fit`` on on-disk cells: what is held in memory, and what is streamed.

A fit on an ``.h5ad`` / ``.zarr`` path, a list of them or a backed AnnData keeps the matrix on
disk. In memory: the ``obs`` table, one pass of chunked statistics (every value checked, the
genes chosen from all cells), and a **working sample** of cells whose size does not grow
with the store's: a uniform random sample, topped up so that every (perturbation, context)
group has a few cells and every context's control cells a pool, each top-up capped in total
(at most about 130,000 cells unless there are more groups than that).
Everything ``fit`` derives from expression before training (tokenizer, reconstruction ceiling,
perturbation features, target prior, validation cells, the pool of control source cells)
comes from that sample; training streams every other cell from disk in shuffled minibatches
(:class:`scdit.data.StreamedTrainingSet`); the model's stored reference cells are read from
the store, a bounded number per group.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .data import TARGET_SUM, CellStore, GeneStats, gene_stats, open_cells, select_hvg
from .train import digest, is_global_zero
from .version import __version__

#: Cells of the uniform random part of the working sample.
SAMPLE_CELLS = 20_000
#: Each (perturbation, context) group contributes at least this many cells (or all it has) ...
MIN_GROUP_CELLS = 30
#: ... as long as that makes at most this many cells in all (else fewer per group, at least 1).
GROUP_TOTAL = 60_000
#: Control cells kept per covariate context (the source pool of a control-source flow) ...
SOURCE_CELLS = 2_000
#: ... at most this many in all (else fewer per context, at least :data:`MIN_GROUP_CELLS`).
SOURCE_TOTAL = 50_000
#: Stored reference cells of an on-disk fit, in all: split evenly among the groups, at least
#: one each (so more only with more groups than this).
REFERENCE_TOTAL = 50_000
#: Rows read to detect the representation and check values before the statistics pass.
PROBE_CELLS = 2_000


def is_on_disk(data) -> bool:
    """True for what :func:`scdit.data.open_cells` reads: a path, a backed AnnData, a list."""
    if isinstance(data, CellStore):
        return True
    if isinstance(data, AnnData):
        return bool(data.isbacked)
    if isinstance(data, (str, os.PathLike)):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(
        isinstance(d, (str, os.PathLike)) or (isinstance(d, AnnData) and d.isbacked)
        for d in data)


@dataclass
class DiskCells:
    """An on-disk fit's store, its obs-only AnnData and (once drawn) its working sample."""

    store: CellStore
    meta: AnnData  # obs and var_names of every cell, no matrix
    probe: object  # PROBE_CELLS rows (stored values), for the representation check
    layer: str | None = None
    stats: GeneStats | None = None
    rows: np.ndarray | None = None  # sorted global rows of the working sample
    X: object = None  # their stored values (CSR float32)

    @classmethod
    def open(cls, data, *, layer: str | None, obs_columns: list[str],
             seed: int) -> DiskCells:
        """Open the store(s); errors for missing files, columns and mismatched genes."""
        if importlib.util.find_spec("scdataset") is None:
            raise ImportError("fit on on-disk cells streams them with scDataset: pip install "
                              "'scdit[large]' (or pip install scdataset), or load the cells "
                              "in memory (anndata.read_h5ad(path)).")
        views = [d for d in (data if isinstance(data, (list, tuple)) else [data])
                 if isinstance(d, AnnData) and d.is_view]
        if views:
            raise ValueError(
                "fit cannot stream a view of a backed AnnData (a subset of its cells or genes). "
                "Pass the backed AnnData itself, load the subset in memory "
                "(adata[rows].to_memory()), or write the subset to .h5ad "
                "(adata[rows].write_h5ad(path)) and pass its path.")
        store = data if isinstance(data, CellStore) else open_cells(data, layer=layer)
        store.require_obs(obs_columns)
        if store.n_obs == 0 or store.n_vars == 0:
            raise ValueError(f"The store is empty ({store.n_obs} cells × {store.n_vars} genes).")
        meta = AnnData(obs=store.obs.copy(), var=pd.DataFrame(index=store.var_names))
        rng = np.random.default_rng([seed, 7])
        rows = np.sort(rng.choice(store.n_obs, min(store.n_obs, PROBE_CELLS), replace=False))
        return cls(store, meta, store.read(rows), layer=layer)

    def check_and_count(self, representation: str, verbose: bool, train) -> GeneStats:
        """One pass over every cell: value checks and per-gene statistics (kept in
        ``train.checkpoint_dir`` and made once per run, see :func:`shared_gene_stats`)."""
        key = store_key(self.store, self.probe, self.layer, representation)
        self.stats = shared_gene_stats(
            self.store, key, representation, verbose=verbose, workers=train.loader_workers,
            cache_dir=train.checkpoint_dir, world=train.devices * train.num_nodes)
        return self.stats

    def draw_sample(self, labels: np.ndarray, context: np.ndarray, control: str,
                    seed: int) -> np.ndarray:
        """Rows of the working sample (see the module docstring), read into :attr:`X`."""
        n = len(labels)
        rng = np.random.default_rng([seed, 11])
        chosen = np.zeros(n, dtype=bool)
        chosen[rng.choice(n, min(n, SAMPLE_CELLS), replace=False)] = True
        keys = pd.DataFrame({"l": labels, "c": context})
        groups = keys.groupby(["l", "c"], sort=True).indices
        n_ctx = len(np.unique(context[labels == control]))
        per_group = min(MIN_GROUP_CELLS, max(1, GROUP_TOTAL // max(len(groups), 1)))
        per_source = min(SOURCE_CELLS, max(MIN_GROUP_CELLS, SOURCE_TOTAL // max(n_ctx, 1)))
        for (lab, _), idx in groups.items():
            want = min(len(idx), per_source if lab == control else per_group)
            have = int(chosen[idx].sum())
            if have < want:
                free = idx[~chosen[idx]]
                chosen[rng.choice(free, want - have, replace=False)] = True
        self.rows = np.flatnonzero(chosen)
        self.X = self.store.read(self.rows)
        return self.rows

    def columns(self, tok, required) -> np.ndarray | None:
        """Gene columns the tokenizer is fitted on and training reads: the tokenizer's
        ``n_top_genes`` most variable genes of all cells (plus ``required``), or ``None`` (all
        genes) for tokenizers that select no genes or when the store has no more."""
        n_top = getattr(tok, "n_top_genes", None)
        if n_top is None or not hasattr(tok, "gene_idx") or self.store.n_vars <= n_top:
            return None
        return select_hvg(self.stats, int(n_top), var_names=list(self.store.var_names),
                          required=list(required))

    def reference_per_group(self, n_groups: int) -> int:
        """Stored reference cells per (condition × covariates) group."""
        return max(1, REFERENCE_TOTAL // max(n_groups, 1))

    def summary(self) -> dict:
        """What the model summary records about the store and the sample."""
        return {"sources": [str(p) for p in self.store.sources], "n_sample": int(len(self.rows)),
                "sample_cells": SAMPLE_CELLS}


def sample_positions(sample: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """Positions of global ``rows`` (all in the sample) in the in-memory matrix."""
    return rows if sample is None else np.searchsorted(sample, rows)


#: Seconds a process waits for global rank 0's statistics: this plus one per CELLS_PER_SECOND.
WAIT_BASE_S = 600.0
CELLS_PER_SECOND = 2_000
#: An error note of rank 0 older than this many seconds before a process started waiting is
#: taken as left over from an earlier run, not as this run's.
STALE_S = 120.0


def store_key(store: CellStore, probe, layer: str | None, representation: str) -> str:
    """Identity of a store's statistics, the same wherever its files lie (a copy on each node's
    disk has the key of the original): shape, stored values per file, a digest of the probe
    rows (the same seeded rows in every process), the layer, the representation and the
    settings of the pass (target sum, scdit version)."""
    return digest(*map(str, (store.n_obs, store.n_vars, store.stored_values(), layer,
                             representation, TARGET_SUM, __version__)), probe)


def shared_gene_stats(store: CellStore, key: str, representation: str, *, verbose: bool,
                      workers: int, cache_dir: str | None, world: int = 1) -> GeneStats:
    """The checked statistics pass of a store, computed once per run.

    Without ``cache_dir`` every process computes it. With a ``cache_dir`` (the fit's
    ``checkpoint_dir``) the result is kept there under ``key`` (:func:`store_key`) and read by
    a later fit on the same data (a resumed run). In a run of ``world`` > 1 processes sharing
    the folder, global rank 0 computes and writes it (or an error note) and the others wait
    for it and read it.
    """
    def compute() -> GeneStats:
        return gene_stats(store, representation=representation, check=True, verbose=verbose,
                          workers=workers)

    if cache_dir is None:
        return compute()
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    done, failed = folder / f"gene_stats-{key}.npz", folder / f"gene_stats-{key}.error"
    leader = world <= 1 or is_global_zero()
    if done.exists():
        stats = _read_stats(done)
        if stats is not None or not leader:
            return stats if stats is not None else _wait(done, failed, folder, store.n_obs)
    if not leader:
        return _wait(done, failed, folder, store.n_obs)
    failed.unlink(missing_ok=True)
    try:
        stats = compute()
    except BaseException as err:
        if world > 1:
            failed.write_text(f"{type(err).__name__}: {err}")
        raise
    tmp = folder / f".gene_stats-{key}.{os.getpid()}.npz"
    np.savez(tmp, **{f: np.asarray(getattr(stats, f)) for f in _STATS_FIELDS})
    os.replace(tmp, done)
    return stats


def _wait(done: Path, failed: Path, folder: Path, n_obs: int) -> GeneStats:
    """Wait for rank 0's statistics (or its error note of this run) and read them."""
    start = time.time()
    deadline = time.monotonic() + WAIT_BASE_S + n_obs / CELLS_PER_SECOND
    while True:
        if done.exists():
            stats = _read_stats(done)
            if stats is not None:
                return stats
        if failed.exists() and failed.stat().st_mtime >= start - STALE_S:
            raise ValueError(f"the statistics pass of global rank 0 failed: "
                             f"{failed.read_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited for global rank 0's statistics of the store in {str(folder)!r}. Is "
                "checkpoint_dir on a filesystem every process of the run can read, and does "
                "every process read the same cells (the same store, or exact copies)?")
        time.sleep(2.0)


_STATS_FIELDS = ("n_obs", "representation", "values", "mean", "var", "norm_mean", "norm_var",
                 "n_cells_expressed", "row_sums")


def _read_stats(path: Path) -> GeneStats | None:
    """The statistics kept in ``path``, or ``None`` when the file cannot be read (being
    replaced, or damaged: it is then computed again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {f: z[f] for f in _STATS_FIELDS}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return GeneStats(n_obs=int(arrays["n_obs"]), representation=str(arrays["representation"]),
                     values=str(arrays["values"]),
                     **{f: arrays[f] for f in _STATS_FIELDS[3:]})
