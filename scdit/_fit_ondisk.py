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
        return cls(store, meta, store.read(rows))

    def check_and_count(self, representation: str, verbose: bool, workers: int = 0,
                        cache_dir: str | None = None) -> GeneStats:
        """One pass over every cell: value checks and per-gene statistics (once per run with a
        shared ``cache_dir``, see :func:`shared_gene_stats`)."""
        self.stats = shared_gene_stats(self.store, representation, verbose=verbose,
                                       workers=workers, cache_dir=cache_dir)
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


def _store_key(store: CellStore, representation: str, settings: tuple) -> str:
    """Identity of a store's statistics: its files (paths, sizes, modification times), shape,
    representation and the statistics' settings."""
    parts: list = [store.n_obs, store.n_vars, representation, *settings]
    for path in store.sources:
        p = Path(path)
        items = [p] + ([p / "X", p / "layers"] if p.is_dir() else [])
        for q in items:
            if q.exists():
                st = q.stat()
                parts += [str(q.resolve()), st.st_size, st.st_mtime_ns]
    return digest(*map(str, parts))


def shared_gene_stats(store: CellStore, representation: str, *, verbose: bool, workers: int,
                      cache_dir: str | None) -> GeneStats:
    """The checked statistics pass of a store, computed once per run.

    Without ``cache_dir`` every process computes it. With a ``cache_dir`` (the fit's
    ``checkpoint_dir``, which several processes must share), the result is kept there: global
    rank 0 computes and writes it (or an error note), the other processes of a multi-device run
    wait for it and read it, and a later fit (a resumed run) on unchanged files reads it too.
    """
    def compute() -> GeneStats:
        return gene_stats(store, representation=representation, check=True, verbose=verbose,
                          workers=workers)

    if cache_dir is None:
        return compute()
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = _store_key(store, representation, (TARGET_SUM, __version__))
    done, failed = folder / f"gene_stats-{key}.npz", folder / f"gene_stats-{key}.error"
    if done.exists():
        return _read_stats(done)
    if is_global_zero():
        failed.unlink(missing_ok=True)
        try:
            stats = compute()
        except Exception as err:
            failed.write_text(f"{type(err).__name__}: {err}")
            raise
        tmp = folder / f".gene_stats-{key}.{os.getpid()}.npz"
        np.savez(tmp, **{f: np.asarray(getattr(stats, f)) for f in _STATS_FIELDS})
        os.replace(tmp, done)
        return stats
    deadline = time.monotonic() + WAIT_BASE_S + store.n_obs / CELLS_PER_SECOND
    while not done.exists():
        if failed.exists():
            raise ValueError(f"the statistics pass of global rank 0 failed: "
                             f"{failed.read_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited for global rank 0's statistics of the store in {str(folder)!r}; is "
                "checkpoint_dir on a filesystem every process of the run can read?")
        time.sleep(2.0)
    return _read_stats(done)


_STATS_FIELDS = ("n_obs", "representation", "values", "mean", "var", "norm_mean", "norm_var",
                 "n_cells_expressed", "row_sums")


def _read_stats(path: Path) -> GeneStats:
    with np.load(path, allow_pickle=False) as z:
        arrays = {f: z[f] for f in _STATS_FIELDS}
    return GeneStats(n_obs=int(arrays["n_obs"]), representation=str(arrays["representation"]),
                     values=str(arrays["values"]),
                     **{f: arrays[f] for f in _STATS_FIELDS[3:]})
