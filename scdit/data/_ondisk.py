"""On-disk cells: one handle over AnnData stores (``.h5ad``, ``.zarr``, backed AnnData) read by rows.

:func:`open_cells` opens one store or a list of them as a single :class:`CellStore`: the small
parts (``obs``, ``var_names``) are loaded, the matrix stays on disk and is read through anndata's
own backed readers (:func:`anndata.io.sparse_dataset` for CSR, the h5py / zarr array for dense
``X``), a block of rows at a time. File handles are opened lazily in each process, so a store can
be handed to DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Rows read at a time by :meth:`CellStore.blocks` unless told otherwise.
BLOCK_ROWS: int = 8192
#: Scattered rows closer than this are read in one span (and the rows between dropped).
GAP_ROWS: int = 32


def _kind(path: Path) -> str:
    if path.suffix == ".zarr" or (path.is_dir() and (path / ".zgroup").exists()) or (
            path.is_dir() and (path / "zarr.json").exists()):
        return "zarr"
    if path.suffix in (".h5ad", ".h5", ".hdf5") or h5py.is_hdf5(path):
        return "h5ad"
    raise ValueError(f"{path}: not an AnnData store (expected an .h5ad file or a .zarr directory).")


class _Part:
    """One store: its path and, once opened in this process, its matrix element."""

    def __init__(self, path: Path, kind: str, layer: str | None):
        self.path, self.kind, self.layer = path, kind, layer
        self._pid: int | None = None
        self._root = None
        self._x = None
        self._indptr: np.ndarray | None = None
        self._group = None

    def root(self):
        if self._pid != os.getpid():  # first use in this process (or a forked worker)
            if self.kind == "h5ad":
                self._root = h5py.File(self.path, "r")
            else:
                import zarr

                self._root = zarr.open_group(self.path, mode="r")
            self._pid, self._x, self._indptr = os.getpid(), None, None
        return self._root

    def matrix(self):
        """The backed matrix: a CSR dataset, or a dense h5py / zarr array."""
        if self._x is None or self._pid != os.getpid():
            root = self.root()
            name = "X" if self.layer is None else f"layers/{self.layer}"
            if name not in root:
                where = "X" if self.layer is None else f"layer {self.layer!r}"
                raise ValueError(f"{self.path}: the store has no {where}.")
            elem = root[name]
            if _is_group(elem):
                self._x, self._group = ad.io.sparse_dataset(elem), elem
                if self._x.format != "csr":
                    raise ValueError(
                        f"{self.path}: {name} is stored as {self._x.format.upper()}; rows of a "
                        "CSC matrix cannot be read in blocks. Rewrite it as CSR (for example "
                        "adata.X = scipy.sparse.csr_matrix(adata.X); adata.write_h5ad(...)).")
            else:
                self._x = elem
        return self._x

    def dtype(self) -> np.dtype:
        x = self.matrix()
        return np.dtype(x.dtype)

    def read(self, rows: np.ndarray | slice):
        """Rows (a slice, or strictly increasing indices) as CSR or a dense ndarray."""
        x = self.matrix()
        if isinstance(x, ad.abc.CSRDataset):
            return self._read_csr(x, rows)
        if isinstance(x, h5py.Dataset) or isinstance(rows, slice):
            return x[rows]
        return x.oindex[rows]  # dense zarr array

    def _read_csr(self, x, rows) -> sp.csr_matrix:
        """CSR rows straight from the store's ``data`` / ``indices`` arrays, one read per run.

        anndata's backed reader rereads the whole ``indptr`` on each slice and reads scattered
        rows one by one; here ``indptr`` (one integer per cell) is read once per process and each
        run of consecutive rows (a block of scDataset's shuffle) costs one read of each array.
        """
        if self._indptr is None:
            self._indptr = np.asarray(self._group["indptr"][:], dtype=np.int64)
        indptr, group = self._indptr, self._group
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(x.shape[0]))
        if rows.size == 0:
            return sp.csr_matrix((0, x.shape[1]), dtype=x.dtype)
        # spans of rows read at once: runs of wanted rows whose gaps are at most GAP_ROWS
        # unwanted rows (one read costs about as much as reading a few dozen rows more)
        cut = np.diff(rows) > GAP_ROWS + 1
        if rows.size > 1 and rows[-1] - rows[0] >= BLOCK_ROWS:  # spans of at most BLOCK_ROWS
            cut |= np.diff(rows // BLOCK_ROWS) > 0
        starts = np.r_[0, np.flatnonzero(cut) + 1]
        ends = np.r_[starts[1:], rows.size]
        data, indices = [], []
        for i, j in zip(starts, ends, strict=True):
            a, b = int(rows[i]), int(rows[j - 1]) + 1
            lo, hi = int(indptr[a]), int(indptr[b])
            d, c = group["data"][lo:hi], group["indices"][lo:hi]
            if b - a == j - i:  # every row of the span is wanted
                data.append(d)
                indices.append(c)
                continue
            want = rows[i:j]
            lens = indptr[want + 1] - indptr[want]
            keep = np.repeat(indptr[want] - lo - np.r_[0, np.cumsum(lens)[:-1]], lens) \
                + np.arange(int(lens.sum()))  # positions of the wanted rows' values
            data.append(d[keep])
            indices.append(c[keep])
        lengths = indptr[rows + 1] - indptr[rows]
        out_ptr = np.r_[0, np.cumsum(lengths)]
        return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), out_ptr),
                             shape=(rows.size, x.shape[1]))

    def close(self) -> None:
        if self._root is not None and self.kind == "h5ad" and self._pid == os.getpid():
            self._root.close()
        self._pid = self._root = self._x = self._indptr = self._group = None

    def __getstate__(self):
        return {"path": self.path, "kind": self.kind, "layer": self.layer, "_pid": None,
                "_root": None, "_x": None, "_indptr": None, "_group": None}


def _is_group(elem) -> bool:
    return isinstance(elem, h5py.Group) or type(elem).__name__ == "Group"


def _source_path(source) -> Path:
    if isinstance(source, ad.AnnData):
        if not source.isbacked:
            raise TypeError(
                "open_cells reads on-disk data: this AnnData is in memory (not backed). Pass it "
                "to scdit.fit directly, or give the path of its .h5ad / .zarr store.")
        if source.is_view:
            raise ValueError(
                "open_cells cannot read a view of a backed AnnData; pass the backed AnnData "
                "itself (select rows later, with the row indices of the streamed loader).")
        return Path(source.filename)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a store is a path (str or Path) or a backed AnnData, got "
                        f"{type(source).__name__}.")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such store: {path}")
    return path


class CellStore:
    """Cells of one or several on-disk AnnData stores, concatenated along ``obs``.

    Made by :func:`open_cells`. ``obs`` and ``var_names`` are in memory; the matrix is read on
    demand, by rows, from the stores.

    Attributes
    ----------
    obs
        The concatenated ``obs`` of the stores (one row per cell, in store order).
    var_names
        Gene names, the same in every store.
    sources
        Paths of the stores.
    offsets
        ``offsets[i]`` is the first global row of store ``i``; ``offsets[-1] == n_obs``.
    """

    def __init__(self, parts: list[_Part], obs: pd.DataFrame, var_names: pd.Index,
                 offsets: np.ndarray):
        self._parts = parts
        self.obs = obs
        self.var_names = var_names
        self.offsets = offsets
        self.sources = [p.path for p in parts]
        self._obs_columns = [set(obs.columns)] * len(parts)

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return int(self.offsets[-1])

    @property
    def n_vars(self) -> int:
        """Number of genes."""
        return len(self.var_names)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_obs, n_vars)``."""
        return self.n_obs, self.n_vars

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the stored matrix (that of the first store)."""
        return self._parts[0].dtype()

    def __len__(self) -> int:
        return self.n_obs

    def __repr__(self) -> str:
        return (f"CellStore({self.n_obs:,} cells x {self.n_vars:,} genes, "
                f"{len(self._parts)} store(s))")

    def read(self, rows) -> sp.csr_matrix | np.ndarray:
        """Read cells by global row: a slice (step 1) or integer indices in any order.

        Parameters
        ----------
        rows
            ``slice(start, stop)`` or a 1-d array of row indices (repeats allowed).

        Returns
        -------
        The rows in the order asked, as float32 CSR when every store holds a sparse matrix,
        else as a dense float32 ndarray.
        """
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.n_obs)
            if step != 1:
                raise ValueError("read() takes slices with step 1; pass indices otherwise.")
            return self._read_sorted(np.arange(start, stop), contiguous=True)
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise TypeError("rows must be a slice or a 1-d array of integer row indices.")
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_obs):
            raise IndexError(f"row indices must lie in [0, {self.n_obs}).")
        uniq, inverse = np.unique(rows, return_inverse=True)
        out = self._read_sorted(uniq, contiguous=False)
        if uniq.size == rows.size and np.array_equal(uniq, rows):
            return out
        return out[inverse]

    def read_dense(self, rows) -> np.ndarray:
        """:meth:`read` as a dense float32 array ``(len(rows), n_vars)``."""
        out = self.read(rows)
        dense = out.toarray() if sp.issparse(out) else out
        return np.ascontiguousarray(dense, dtype=np.float32)

    def __getitem__(self, rows) -> np.ndarray:
        return self.read_dense(rows)

    def _read_sorted(self, rows: np.ndarray, contiguous: bool):
        pieces = []
        cut = np.searchsorted(rows, self.offsets)
        for i, part in enumerate(self._parts):
            local = rows[cut[i]:cut[i + 1]] - self.offsets[i]
            if local.size == 0:
                continue
            if contiguous or local[-1] - local[0] + 1 == local.size:
                block = part.read(slice(int(local[0]), int(local[-1]) + 1))
            else:
                block = part.read(local)
            pieces.append(block)
        if not pieces:
            return sp.csr_matrix((0, self.n_vars), dtype=np.float32)
        if all(sp.issparse(b) for b in pieces):
            out = sp.vstack(pieces, format="csr") if len(pieces) > 1 else sp.csr_matrix(pieces[0])
            return out.astype(np.float32, copy=False)
        dense = [b.toarray() if sp.issparse(b) else np.asarray(b) for b in pieces]
        return np.concatenate(dense).astype(np.float32, copy=False)

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, int, object]]:
        """Contiguous row blocks ``(start, stop, matrix)`` in order, each from :meth:`read`."""
        if block_rows < 1:
            raise ValueError("block_rows must be positive.")
        for start in range(0, self.n_obs, block_rows):
            stop = min(start + block_rows, self.n_obs)
            yield start, stop, self.read(slice(start, stop))

    def stored_values(self) -> list[int]:
        """Per store, the number of stored values: non-zeros of a CSR matrix (the last entry
        of its ``indptr``), every entry of a dense one."""
        out = []
        for part in self._parts:
            x = part.matrix()
            if isinstance(x, ad.abc.CSRDataset):
                out.append(int(part._group["indptr"][-1]))
            else:
                out.append(int(np.prod(x.shape)))
        return out

    def obs_column(self, key: str) -> pd.Series:
        """One ``obs`` column, with a clear error when a store lacks it."""
        self.require_obs([key])
        return self.obs[key]

    def require_obs(self, keys: Sequence[str]) -> None:
        """Raise ``KeyError`` naming the store when an ``obs`` column is missing."""
        for key in keys:
            missing = [str(p) for p, cols in zip(self.sources, self._obs_columns, strict=True)
                       if key not in cols]
            if missing:
                raise KeyError(
                    f"{key!r} is not an obs column in {', '.join(missing)}; available columns: "
                    f"{sorted(set.intersection(*self._obs_columns))}. Pass the column holding "
                    "each cell's label.")

    def close(self) -> None:
        """Close the open file handles (they reopen on the next read)."""
        for part in self._parts:
            part.close()

    def __enter__(self) -> CellStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_small(part: _Part, key: str):
    root = part.root()
    if key not in root:
        raise ValueError(f"{part.path}: the store has no {key!r}; is it an AnnData store?")
    return ad.io.read_elem(root[key])


def open_cells(source, *, layer: str | None = None,
               obs_columns: Sequence[str] = ()) -> CellStore:
    """Open on-disk cells for chunked statistics and streamed training.

    Parameters
    ----------
    source
        An ``.h5ad`` path, a ``.zarr`` store path, an AnnData opened with ``backed="r"``, or a
        list of them (concatenated along cells; their genes must be the same, in the same order).
    layer
        Read ``layers[layer]`` instead of ``X``.
    obs_columns
        ``obs`` columns that must be present (a ``KeyError`` names the store that lacks one).

    Returns
    -------
    A :class:`CellStore` with ``n_obs``, ``var_names``, ``obs`` (in memory) and row reads.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ValueError
        The stores' ``var_names`` differ, or a store has no ``X`` (or layer) or CSC storage.
    KeyError
        A required ``obs`` column is missing.
    TypeError
        The matrix is not numeric, or ``source`` is not a path or backed AnnData.
    """
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
        raise ValueError("open_cells needs at least one store; got an empty list.")
    parts, obs_frames, var_names = [], [], None
    for src in sources:
        path = _source_path(src)
        part = _Part(path, _kind(path), layer)
        backed = isinstance(src, ad.AnnData)  # its obs and var_names may have been edited
        var = src.var if backed else _read_small(part, "var")
        names = pd.Index(var.index.astype(str))
        if var_names is None:
            var_names, first = names, path
        elif not names.equals(var_names):
            raise ValueError(_var_mismatch(first, var_names, path, names))
        dtype = part.dtype()
        if dtype.kind not in "biuf":
            raise TypeError(
                f"{path}: the expression matrix has dtype {dtype}, not a number type; scdit "
                "needs counts or log1p-normalised expression stored as integers or floats.")
        obs = src.obs.copy() if backed else _read_small(part, "obs")
        if part.matrix().shape[0] != len(obs):
            raise ValueError(f"{path}: X has {part.matrix().shape[0]} rows but obs has "
                             f"{len(obs)}.")
        parts.append(part)
        obs_frames.append(obs)
    offsets = np.concatenate([[0], np.cumsum([len(o) for o in obs_frames])]).astype(np.int64)
    obs = obs_frames[0] if len(obs_frames) == 1 else pd.concat(obs_frames, axis=0)
    store = CellStore(parts, obs, var_names, offsets)
    store._obs_columns = [set(o.columns) for o in obs_frames]
    store.require_obs(list(obs_columns))
    return store


def _var_mismatch(first: Path, a: pd.Index, other: Path, b: pd.Index) -> str:
    if len(a) != len(b):
        detail = f"{len(a)} vs {len(b)} genes"
    elif set(a) == set(b):
        detail = "the same genes in a different order"
    else:
        i = int(np.argmax(a.to_numpy() != b.to_numpy()))
        detail = f"gene {i} is {a[i]!r} vs {b[i]!r}"
    return (f"the stores' var_names differ ({first} vs {other}: {detail}); concatenated stores "
            "need the same genes in the same order (subset and reorder them when converting).")
