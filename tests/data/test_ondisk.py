"""On-disk cells (issue #19): the synthetic store writer, open_cells, chunked stats, streaming."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader

from scdit.data import (
    CellStore,
    StreamedCells,
    gene_stats,
    open_cells,
    select_hvg,
    to_log1p,
)
from scdit.tokenizers import select_genes

pytest.importorskip("scdataset")

_WRITER = Path(__file__).resolve().parents[2] / "benchmarks" / "make_synthetic_store.py"
_spec = importlib.util.spec_from_file_location("make_synthetic_store", _WRITER)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stores")
    kw = {"cells": 700, "genes": 40, "perturbations": 5, "seed": 3, "block": 128,
          "verbose": False}
    return {"h5ad": writer.write_store(d / "a.h5ad", **kw),
            "zarr": writer.write_store(d / "a.zarr", **kw),
            "other": writer.write_store(d / "b.h5ad", **{**kw, "cells": 300, "seed": 4})}


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_writer_round_trip_reads_back_with_anndata(stores, fmt):
    path = stores[fmt]
    a = ad.read_h5ad(path) if fmt == "h5ad" else ad.read_zarr(path)
    assert a.shape == (700, 40)
    assert list(a.var_names[:2]) == ["G00000", "G00001"]
    assert a.obs_names[0] == "c0" and a.obs_names[-1] == "c699" and a.obs_names.is_unique
    labels = a.obs["perturbation"]
    assert labels.cat.categories[0] == "control" and len(labels.cat.categories) == 6
    assert 30 < (labels == "control").sum() < 120  # ~10% controls
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    assert np.array_equal(a.X.data, np.round(a.X.data)) and a.X.data.min() > 0  # NB counts
    backed = ad.read_h5ad(stores["h5ad"], backed="r")
    np.testing.assert_array_equal(backed.X[:50].toarray(), a.X[:50].toarray())  # same seed


def test_writer_is_deterministic_and_blocks_do_not_matter_for_shape(tmp_path):
    one = writer.write_store(tmp_path / "x.h5ad", cells=90, genes=12, perturbations=3,
                             seed=1, block=32, verbose=False)
    two = writer.write_store(tmp_path / "y.h5ad", cells=90, genes=12, perturbations=3,
                             seed=1, block=32, verbose=False)
    a, b = ad.read_h5ad(one), ad.read_h5ad(two)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert a.obs["perturbation"].equals(b.obs["perturbation"])


def test_open_cells_reads_the_same_rows_as_anndata(stores):
    a = ad.read_h5ad(stores["h5ad"])
    for src in (stores["h5ad"], str(stores["zarr"]), ad.read_h5ad(stores["h5ad"], backed="r")):
        store = open_cells(src, obs_columns=["perturbation"])
        assert isinstance(store, CellStore) and store.shape == (700, 40) and len(store) == 700
        assert store.var_names.equals(a.var_names)
        assert store.obs["perturbation"].equals(a.obs["perturbation"])
        rows = np.array([699, 3, 3, 0, 350])  # any order, repeats
        np.testing.assert_array_equal(store.read_dense(rows), a.X[rows].toarray())
        np.testing.assert_array_equal(store.read(slice(10, 20)).toarray(), a.X[10:20].toarray())
        store.close()


def test_a_backed_anndata_brings_its_in_memory_obs(stores):
    backed = ad.read_h5ad(stores["h5ad"], backed="r")
    backed.obs["dose"] = 1.0  # edited in memory, not on disk
    store = open_cells(backed, obs_columns=["dose"])
    assert (store.obs["dose"] == 1.0).all() and "dose" not in backed.file["obs"]
    np.testing.assert_array_equal(store.read_dense([1, 2]), backed.X[[1, 2]].toarray())


def test_a_list_of_stores_is_concatenated(stores):
    store = open_cells([stores["h5ad"], stores["other"]])
    a, b = ad.read_h5ad(stores["h5ad"]), ad.read_h5ad(stores["other"])
    assert store.n_obs == 1000 and list(store.offsets) == [0, 700, 1000]
    rows = np.array([5, 699, 700, 999])
    want = np.vstack([a.X[[5, 699]].toarray(), b.X[[0, 299]].toarray()])
    np.testing.assert_array_equal(store.read_dense(rows), want)
    assert len(store.obs) == 1000


def test_scattered_rows_with_gaps_and_empty_rows_read_exactly(tmp_path, monkeypatch):
    """Rows close together are read in one span and the rows between dropped; spans stop at
    block boundaries; empty rows, repeats and any order come back exactly."""
    import scdit.data._ondisk as ondisk

    rng = np.random.default_rng(0)
    X = sp.random(3000, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    X = sp.csr_matrix(X.multiply(rng.random((3000, 1)) > 0.3))  # ~30% empty rows
    path = tmp_path / "gaps.h5ad"
    ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(3000)]),
               var=pd.DataFrame(index=[f"g{i}" for i in range(30)])).write_h5ad(path)
    monkeypatch.setattr(ondisk, "BLOCK_ROWS", 256)
    store = open_cells(path)
    for rows in (np.arange(0, 3000, 7), np.arange(5, 3000, 40), rng.choice(3000, 500),
                 np.sort(rng.choice(3000, 900, replace=False)), np.array([2999, 0, 0, 1500])):
        got = store.read(rows)
        assert sp.issparse(got)
        np.testing.assert_array_equal(got.toarray(), X[rows].toarray())
    # the spans read: rows 7 apart are merged, but never across a block of 256 rows
    part = store._parts[0]
    part.matrix()
    spans = []

    class Spy:
        def __init__(self, group):
            self.group = group

        def __getitem__(self, name):
            arr = self.group[name]
            if name != "data":
                return arr

            class Data:
                def __getitem__(self, sl):
                    spans.append((sl.start, sl.stop))
                    return arr[sl]
            return Data()

    part._group = Spy(part._group)
    store.read(np.arange(0, 3000, 7))
    first_rows = [np.searchsorted(X.indptr, lo, side="right") - 1 for lo, _ in spans]
    last_rows = [np.searchsorted(X.indptr, hi, side="left") - 1 for _, hi in spans]
    assert 10 <= len(spans) <= 13  # 3,000 rows in blocks of 256: 12 spans
    assert all(a // 256 == b // 256 for a, b in zip(first_rows, last_rows, strict=True))


def test_a_dense_store_is_read_too(tmp_path):
    X = np.random.default_rng(0).poisson(1.0, (50, 6)).astype(np.float32)
    path = tmp_path / "dense.h5ad"
    ad.AnnData(X, obs=pd.DataFrame({"p": ["a"] * 50}, index=[f"c{i}" for i in range(50)]),
               var=pd.DataFrame(index=[f"g{i}" for i in range(6)])).write_h5ad(path)
    store = open_cells(path)
    np.testing.assert_array_equal(store.read_dense([49, 0, 7]), X[[49, 0, 7]])
    st = gene_stats(store, values="stored", block_rows=16)
    np.testing.assert_allclose(st.mean, X.astype(np.float64).mean(0), rtol=1e-12)


@pytest.mark.parametrize("block_rows", [64, 1000])
def test_chunked_stats_equal_the_in_memory_computation(stores, block_rows):
    a = ad.read_h5ad(stores["h5ad"])
    counts = a.X.toarray().astype(np.float64)
    st = gene_stats(open_cells(stores["h5ad"]), block_rows=block_rows)
    log = to_log1p(a.X).toarray().astype(np.float64)
    assert st.representation == "counts" and st.n_obs == 700
    np.testing.assert_allclose(st.mean, log.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.var, log.var(0), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(st.norm_mean, np.expm1(log).mean(0), rtol=1e-10)
    np.testing.assert_allclose(st.norm_var, np.expm1(log).var(0), rtol=1e-8)
    np.testing.assert_array_equal(st.row_sums, counts.sum(1))
    np.testing.assert_array_equal(st.n_cells_expressed, (counts > 0).sum(0))
    stored = gene_stats(open_cells(stores["h5ad"]), values="stored", block_rows=block_rows)
    np.testing.assert_allclose(stored.mean, counts.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stored.var, counts.var(0), rtol=1e-8)


def test_chunked_stats_do_not_depend_on_workers(stores):
    """Blocks summarised in DataLoader workers are merged in order: the same numbers, bitwise."""
    one = gene_stats(open_cells(stores["h5ad"]), block_rows=64, check=True)
    two = gene_stats(open_cells(stores["h5ad"]), block_rows=64, check=True, workers=2)
    for name in ("mean", "var", "norm_mean", "norm_var", "n_cells_expressed", "row_sums"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))


def test_chunked_hvg_selection_is_the_in_memory_one(stores):
    a = ad.read_h5ad(stores["h5ad"])
    st = gene_stats(open_cells(stores["h5ad"]), block_rows=100)
    for n in (5, 17):
        want = select_genes(to_log1p(a.X), a.var_names, n)
        np.testing.assert_array_equal(select_hvg(st, n), want)
    got = select_hvg(st, 5, var_names=a.var_names, required=["G00039"])
    assert 39 in got and len(got) == 5
    assert len(select_hvg(st, 100)) == 40


def _epoch(ds: StreamedCells) -> np.ndarray:
    return np.concatenate([rows.numpy() for _, rows in ds])


def test_streaming_visits_every_row_once_with_the_right_values(stores):
    store = open_cells(stores["h5ad"])
    ds = StreamedCells(store, batch_size=32, block_size=8, fetch_factor=4, seed=0)
    a = ad.read_h5ad(stores["h5ad"])
    seen, n_batches = [], 0
    for x, rows in ds:
        assert x.dtype == torch.float32 and rows.dtype == torch.int64 and x.shape[1] == 40
        assert len(rows) <= 32
        np.testing.assert_array_equal(x.numpy(), a.X[rows.numpy()].toarray())
        seen.append(rows.numpy())
        n_batches += 1
    seen = np.concatenate(seen)
    assert np.array_equal(np.sort(seen), np.arange(700)) and n_batches == len(ds)
    assert not np.array_equal(seen, np.arange(700))  # shuffled


def test_streaming_is_deterministic_for_a_seed_and_differs_between_seeds_and_epochs(stores):
    store = open_cells(stores["h5ad"])
    kw = {"batch_size": 50, "block_size": 4, "fetch_factor": 2}
    first = _epoch(StreamedCells(store, seed=7, **kw))
    np.testing.assert_array_equal(first, _epoch(StreamedCells(store, seed=7, **kw)))
    assert not np.array_equal(first, _epoch(StreamedCells(store, seed=8, **kw)))
    ds = StreamedCells(store, seed=7, **kw)
    ds.set_epoch(1)
    second = _epoch(ds)
    assert not np.array_equal(first, second) and np.array_equal(np.sort(second), np.arange(700))


def test_streaming_subsets_rows_and_genes_and_normalises(stores):
    store = open_cells(stores["h5ad"])
    a = ad.read_h5ad(stores["h5ad"])
    rows, genes = np.arange(100, 400, 3), np.array([0, 5, 39])
    ds = StreamedCells(store, batch_size=16, block_size=4, rows=rows, genes=genes, log1p=True)
    assert ds.n_cells == 100 and ds.n_genes == 3
    got_rows, got_x = [], []
    for x, r in ds:
        got_rows.append(r.numpy())
        got_x.append(x.numpy())
    order = np.concatenate(got_rows)
    assert np.array_equal(np.sort(order), rows)
    want = to_log1p(a.X[order]).toarray()[:, genes]
    np.testing.assert_allclose(np.concatenate(got_x), want, rtol=1e-6)


def test_streaming_in_dataloader_workers_splits_the_epoch(stores):
    store = open_cells(stores["h5ad"])
    ds = StreamedCells(store, batch_size=25, block_size=5, fetch_factor=2, seed=1)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    seen = np.concatenate([r.numpy() for _, r in loader])
    assert np.array_equal(np.sort(seen), np.arange(700))


def test_bad_inputs_have_clear_errors(stores, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such store"):
        open_cells(tmp_path / "missing.h5ad")
    with pytest.raises(ValueError, match="at least one store"):
        open_cells([])
    with pytest.raises(TypeError, match="in memory"):
        open_cells(ad.read_h5ad(stores["h5ad"]))
    with pytest.raises(KeyError, match="'condition' is not an obs column"):
        open_cells(stores["h5ad"], obs_columns=["condition"])
    other_genes = writer.write_store(tmp_path / "g.h5ad", cells=20, genes=41, perturbations=2,
                                     verbose=False)
    with pytest.raises(ValueError, match="var_names differ.*40 vs 41 genes"):
        open_cells([stores["h5ad"], other_genes])
    # a store whose obs lacks a column the other has
    a = ad.read_h5ad(stores["other"])
    a.obs = a.obs.drop(columns="perturbation")
    a.write_h5ad(tmp_path / "nolabel.h5ad")
    with pytest.raises(KeyError, match="nolabel.h5ad"):
        open_cells([stores["h5ad"], tmp_path / "nolabel.h5ad"], obs_columns=["perturbation"])
    # non-numeric matrix
    a = ad.AnnData(np.zeros((3, 2), np.float32),
                   obs=pd.DataFrame(index=["a", "b", "c"]), var=pd.DataFrame(index=["x", "y"]))
    bad = tmp_path / "strings.h5ad"
    a.write_h5ad(bad)
    with h5py.File(bad, "r+") as f:
        del f["X"]
        f.create_dataset("X", data=np.array([[b"a", b"b"]] * 3))
    with pytest.raises(TypeError, match="not a number type"):
        open_cells(bad)
    with pytest.raises(ValueError, match="no layer 'counts'"):
        open_cells(stores["h5ad"], layer="counts")
    store = open_cells(stores["h5ad"])
    with pytest.raises(IndexError):
        store.read([700])
    with pytest.raises(TypeError, match="CellStore"):
        StreamedCells(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        StreamedCells(store, batch_size=0)
