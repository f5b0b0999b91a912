"""Chunked statistics of on-disk cells: per-gene moments and row sums in one pass, and HVGs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from torch.utils.data import DataLoader, Dataset

from ._ondisk import BLOCK_ROWS, CellStore
from ._representation import TARGET_SUM, Representation, counts_to_log1p, detect_representation
from ._setup import check_expression


@dataclass
class GeneStats:
    """Per-gene moments and per-cell sums of a :class:`CellStore`, from :func:`gene_stats`.

    Attributes
    ----------
    n_obs
        Number of cells.
    representation
        ``"counts"`` or ``"log1p"``: what the store holds (detected on its first block).
    values
        What ``mean`` and ``var`` describe: ``"log1p"`` (log1p-normalised expression) or
        ``"stored"`` (the stored values as they are).
    mean, var
        Per-gene mean and variance (``ddof=0``, float64) of ``values``.
    norm_mean, norm_var
        Per-gene mean and variance of the normalised expression ``expm1(log1p)``: the input of
        the dispersion-based gene selection (:func:`select_hvg`).
    n_cells_expressed
        Per-gene number of cells with a non-zero value.
    row_sums
        Per-cell sum of the stored values (the library size when the store holds counts).
    """

    n_obs: int
    representation: Representation
    values: str
    mean: np.ndarray
    var: np.ndarray
    norm_mean: np.ndarray
    norm_var: np.ndarray
    n_cells_expressed: np.ndarray
    row_sums: np.ndarray


def _block_moments(X) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, mean, m2)`` per gene of one block: its size, mean and sum of squared deviations."""
    nb = X.shape[0]
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        data = np.asarray(X.data, dtype=np.float64)
        s1 = np.bincount(X.indices, weights=data, minlength=X.shape[1])
        s2 = np.bincount(X.indices, weights=data * data, minlength=X.shape[1])
    else:
        X = np.asarray(X, dtype=np.float64)
        s1, s2 = X.sum(0), np.einsum("ij,ij->j", X, X)
    mean_b = s1 / max(nb, 1)
    return nb, mean_b, np.maximum(s2 - nb * mean_b**2, 0.0)


class _Moments:
    """Running per-gene mean and sum of squared deviations, merged block by block (Chan et al.)."""

    def __init__(self, n_vars: int):
        self.n = 0
        self.mean = np.zeros(n_vars)
        self.m2 = np.zeros(n_vars)

    def merge(self, nb: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if nb == 0:
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * nb / n)
        self.n = n

    def var(self) -> np.ndarray:
        return self.m2 / max(self.n, 1)


def _float64(X):
    return sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, np.float64)


class _Blocks(Dataset):
    """Row blocks of a store, each read, checked and summarised where it is fetched (in a
    DataLoader worker, or in this process)."""

    def __init__(self, store: CellStore, block_rows: int, representation: Representation,
                 values: str, target_sum: float, check: bool):
        self.store, self.block_rows, self.representation = store, int(block_rows), representation
        self.values, self.target_sum, self.check = values, float(target_sum), check

    def __len__(self) -> int:
        return -(-self.store.n_obs // self.block_rows)

    def __getitem__(self, i: int) -> dict:
        start = int(i) * self.block_rows
        stop = min(start + self.block_rows, self.store.n_obs)
        X = self.store.read(slice(start, stop))
        if self.check:
            check_expression(X, self.representation,
                             where=f"the stored matrix ({_where(self.store, start, stop)})")
        X = _float64(X)
        row_sums = np.asarray(X.sum(axis=1)).ravel()
        if sp.issparse(X):
            X.eliminate_zeros()
            nnz = np.bincount(X.indices, minlength=X.shape[1])
        else:
            nnz = np.count_nonzero(X, axis=0)
        if self.representation == "counts":
            log = _float64(counts_to_log1p(X, target_sum=self.target_sum, lib=row_sums))
        else:
            log = X
        main = _block_moments(X if self.values == "stored" else log)
        expr = log.copy()
        if sp.issparse(expr):
            np.expm1(expr.data, out=expr.data)
        else:
            np.expm1(expr, out=expr)
        return {"start": start, "stop": stop, "row_sums": row_sums, "nnz": nnz, "main": main,
                "norm": _block_moments(expr)}


def _as_is(item):
    return item


def gene_stats(
    store: CellStore,
    *,
    values: Literal["log1p", "stored"] = "log1p",
    representation: Representation | None = None,
    target_sum: float = TARGET_SUM,
    block_rows: int = BLOCK_ROWS,
    check: bool = False,
    verbose: bool = False,
    workers: int = 0,
) -> GeneStats:
    """Per-gene moments and per-cell sums of on-disk cells, in one pass over row blocks.

    Memory is that of one block (``block_rows`` × genes) per worker plus a few per-gene vectors
    and the per-cell sums (one float per cell), whatever the number of cells. Blocks are merged
    in order, so the result does not depend on ``workers``.

    Parameters
    ----------
    store
        Cells from :func:`open_cells`.
    values
        ``"log1p"``: moments of log1p-normalised expression (counts are scaled to
        ``target_sum`` per cell, then ``log1p``; log1p stores are taken as they are).
        ``"stored"``: moments of the stored values.
    representation
        ``"counts"`` or ``"log1p"``; detected on the first block when ``None``.
    target_sum
        Library size counts are normalised to.
    block_rows
        Rows read at a time.
    check
        Check every block as ``scdit.fit`` checks in-memory expression
        (:func:`scdit.data.check_expression`: NaN, infinite, negative values; non-integer
        counts; normalised but not logged data; ...), raising its error with the store and the
        rows of the block.
    verbose
        Show a progress bar.
    workers
        DataLoader worker processes reading and summarising blocks (0: this process).

    Returns
    -------
    A :class:`GeneStats`.
    """
    if values not in ("log1p", "stored"):
        raise ValueError(f"values must be 'log1p' or 'stored', got {values!r}.")
    if representation not in (None, "counts", "log1p"):
        raise ValueError(f"representation must be 'counts', 'log1p' or None, got "
                         f"{representation!r}.")
    if block_rows < 1:
        raise ValueError("block_rows must be positive.")
    if representation is None:
        first = store.read(slice(0, min(block_rows, store.n_obs)))
        if check:
            representation = check_expression(first, None, where=(
                f"the stored matrix ({_where(store, 0, min(block_rows, store.n_obs))})"))
        else:
            representation = detect_representation(first)
    main, norm = _Moments(store.n_vars), _Moments(store.n_vars)
    nnz = np.zeros(store.n_vars, dtype=np.int64)
    row_sums = np.zeros(store.n_obs, dtype=np.float64)
    blocks = _Blocks(store, block_rows, representation, values, target_sum, check)
    parts = DataLoader(blocks, batch_size=None, shuffle=False, num_workers=int(workers),
                       collate_fn=_as_is)
    if verbose:
        from tqdm.auto import tqdm

        parts = tqdm(parts, total=len(blocks), desc="scdit: gene statistics", unit="block",
                     mininterval=1.0)
    for part in parts:
        row_sums[part["start"]:part["stop"]] = part["row_sums"]
        nnz += part["nnz"]
        main.merge(*part["main"])
        norm.merge(*part["norm"])
    return GeneStats(
        n_obs=store.n_obs, representation=representation, values=values,
        mean=main.mean, var=main.var(), norm_mean=norm.mean, norm_var=norm.var(),
        n_cells_expressed=nnz, row_sums=row_sums)


def _where(store: CellStore, start: int, stop: int) -> str:
    """``"<file>, rows a-b"`` of a block of global rows (the file of its first row)."""
    i = int(np.searchsorted(store.offsets, start, side="right") - 1)
    local = start - int(store.offsets[i])
    return f"{store.sources[i]}, rows {local}-{local + stop - start - 1}"


def select_hvg(
    stats: GeneStats,
    n_top: int,
    *,
    var_names: Sequence[str] | None = None,
    required: Sequence[str] = (),
) -> np.ndarray:
    """Indices of the ``n_top`` most variable genes from chunked statistics (Seurat dispersion).

    The recipe of :func:`scdit.tokenizers.select_genes`, computed from :class:`GeneStats`
    instead of an in-memory matrix: the dispersion ``log(var / mean)`` of normalised expression
    (``norm_mean``, ``norm_var``) is z-scored within up to 20 bins of mean expression (at least
    10 genes a bin), and the genes with the highest scores are kept. Genes never expressed score
    lowest.

    Parameters
    ----------
    stats
        From :func:`gene_stats`.
    n_top
        Number of genes to select (all genes when there are no more).
    var_names
        Gene names, needed only with ``required``.
    required
        Gene names always kept (in addition to the top genes when they are not among them,
        the total staying ``max(n_top, len(required))``).

    Returns
    -------
    Sorted gene indices (int64).
    """
    mean, var = stats.norm_mean, stats.norm_var
    n_genes = mean.size
    if n_top < 1:
        raise ValueError(f"n_top must be positive, got {n_top}.")
    req: list[int] = []
    if required:
        if var_names is None:
            raise ValueError("select_hvg needs var_names to find the required genes.")
        pos = {g: i for i, g in enumerate(var_names)}
        req = [pos[g] for g in dict.fromkeys(required) if g in pos]
    if n_genes <= n_top:
        return np.arange(n_genes)
    return np.asarray(dispersion_top(mean, var, n_top, req), dtype=np.int64)


def dispersion_top(mean: np.ndarray, var: np.ndarray, n_top: int,
                   required: list[int] | None = None) -> list[int]:
    """Sorted indices of the ``n_top`` genes of highest normalised dispersion, ``required``
    (indices) first (Seurat's recipe: ``log(var / mean)`` z-scored within up to 20 bins of the
    mean, ≥ 10 genes per bin so that the z-scores have company; genes of zero mean last)."""
    n_genes = len(mean)
    disp = np.log(np.maximum(var, 1e-12) / np.maximum(mean, 1e-12))
    n_bins = int(np.clip(n_genes // 10, 1, 20))
    bins = np.digitize(mean, np.quantile(mean, np.linspace(0, 1, n_bins + 1)[1:-1]))
    score = np.full(n_genes, -np.inf)
    for b in np.unique(bins):
        m = (bins == b) & (mean > 0)
        if m.sum() > 1:
            sd = disp[m].std()
            score[m] = (disp[m] - disp[m].mean()) / (sd if sd > 0 else 1.0)
        elif m.sum() == 1:
            score[m] = 0.0
    req = list(required or [])
    top = list(np.argsort(-score, kind="stable")[:n_top])
    return sorted(list(dict.fromkeys(req + top))[: max(n_top, len(req))])
