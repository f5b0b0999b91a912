"""``scdit.fit`` on on-disk cells (issue #19): paths, lists and backed AnnData train by streaming,
learn, are deterministic, resume bitwise, select genes from all cells, keep a bounded working
sample, and refuse bad stores with clear errors before any training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scdit
import scdit._fit_ondisk as ondisk
from scdit.data import StreamedTrainingSet, StreamLoader, gene_stats, open_cells, select_hvg
from scdit.train import CHECKPOINT_NAME, read_checkpoint
from tests.helpers import UP_BLOCKS, dense, make_counts_adata, tiny_train
from tests.train.test_resume import _same_weights, _wait_for_checkpoint

pytest.importorskip("scdataset")
_real_sleep = time.sleep

KW = {"preset": "tiny", "max_steps": 40, "max_minutes": None, "seed": 0, "verbose": False,
      "train": tiny_train(val_every=10)}


def _write(adata: ad.AnnData, path: Path, fmt: str = "h5ad") -> Path:
    adata = adata.copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.write_zarr(path) if fmt == "zarr" else adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return _write(make_counts_adata(), tmp_path_factory.mktemp("disk") / "cells.h5ad")


@pytest.fixture(scope="module")
def disk_model(store):
    return scdit.fit(store, "condition", **KW)


def test_fit_from_a_path_streams_and_learns(store, disk_model):
    info = disk_model.summary["on_disk"]
    assert info["sources"] == [str(store)] and info["n_sample"] == 400
    assert disk_model.summary["n_train"] + disk_model.summary["n_val"] == 400
    hist = [h["val_loss"] for h in disk_model.summary["history"]]
    assert hist[-1] < hist[0]  # validation loss falls: training on streamed cells learns
    # the perturbation's strongest effect is predicted: G1 raises genes 10-14
    pred = dense(disk_model.predict("G1", n_cells=200, seed=0).X)
    ctrl = dense(disk_model.predict("ctrl", n_cells=200, seed=0).X)
    up = list(UP_BLOCKS["G1"])
    assert pred[:, up].mean() > 1.5 * ctrl[:, up].mean()


def test_on_disk_fit_matches_in_memory_fit(store, disk_model):
    """Same data in memory: same tokenizer, conditions and reference groups; a comparable
    validation loss (the batches differ: streamed blocks vs a permutation)."""
    mem = scdit.fit(make_counts_adata(), "condition", **KW)
    assert disk_model.vocab.conditions == mem.vocab.conditions
    assert disk_model.summary["n_val"] == mem.summary["n_val"]
    a, b = disk_model.summary["best_val_loss"], mem.summary["best_val_loss"]
    assert abs(a - b) < 0.15 * b


def test_on_disk_fit_is_deterministic_and_round_trips(store, disk_model, tmp_path):
    again = scdit.fit(store, "condition", **KW)
    assert _same_weights(again, disk_model)
    disk_model.save(tmp_path / "m")
    loaded = scdit.load(tmp_path / "m")
    a = loaded.predict("G1+G2", n_cells=30, seed=1)
    b = disk_model.predict("G1+G2", n_cells=30, seed=1)
    assert np.array_equal(dense(a.X), dense(b.X))


def test_loader_workers_read_the_stream(store, disk_model):
    """Worker processes read the cells: deterministic for a number of workers, and learning."""
    kw = {**KW, "train": tiny_train(val_every=10, loader_workers=2)}
    a = scdit.fit(store, "condition", **kw)
    b = scdit.fit(store, "condition", **kw)
    assert _same_weights(a, b)
    hist = [h["val_loss"] for h in a.summary["history"]]
    assert hist[-1] < hist[0]
    assert abs(a.summary["best_val_loss"] - disk_model.summary["best_val_loss"]) < 0.15


@pytest.mark.parametrize("kind", ["zarr", "list", "backed"])
def test_other_on_disk_inputs(tmp_path, kind):
    adata = make_counts_adata()
    if kind == "zarr":
        data = _write(adata, tmp_path / "c.zarr", "zarr")
    elif kind == "list":
        data = [_write(adata[:200], tmp_path / "a.h5ad"), _write(adata[200:], tmp_path / "b.h5ad")]
    else:
        data = ad.read_h5ad(_write(adata, tmp_path / "c.h5ad"), backed="r")
    model = scdit.fit(data, "condition", covariate_keys="cell_type",
                      **{**KW, "max_steps": 10})
    assert model.summary["on_disk"]["n_sample"] == 400
    assert model.config.flow.source == "control"  # covariates: control cells as the source
    out = model.predict("G2", covariates={"cell_type": "B"}, n_cells=8, seed=0)
    assert out.n_obs == 8 and out.n_vars == adata.n_vars
    if kind == "backed":
        assert data.isbacked  # the user's AnnData is left as it was


def test_genes_are_selected_from_all_cells(tmp_path, monkeypatch):
    """More genes than the tokenizer keeps: the genes are the most variable of all cells (the
    chunked statistics), the targets are kept, and the model predicts every gene."""
    adata = make_counts_adata(n_genes=120)
    path = _write(adata, tmp_path / "wide.h5ad")
    monkeypatch.setattr(ondisk, "SAMPLE_CELLS", 50)  # a working sample smaller than the store
    monkeypatch.setattr(ondisk, "MIN_GROUP_CELLS", 5)
    monkeypatch.setattr(ondisk, "SOURCE_CELLS", 20)
    model = scdit.fit(path, "condition", tokenizer={"kind": "genes", "n_top_genes": 40},
                      **{**KW, "max_steps": 10})
    hvg = select_hvg(gene_stats(open_cells(path)), 40, var_names=list(adata.var_names),
                     required=["G1", "G2", "G3"])
    assert sorted(model.tokenizer.genes) == sorted(adata.var_names[hvg])
    assert {"G1", "G2", "G3"} <= set(model.tokenizer.genes)
    idx = adata.var_names.get_indexer(list(model.tokenizer.genes))
    assert np.array_equal(model.tokenizer.gene_idx, idx)  # columns of all genes
    n_sample = model.summary["on_disk"]["n_sample"]
    assert 50 < n_sample < 400  # uniform 50 + the groups topped up, not the whole store
    assert model.summary["n_train"] + model.summary["n_val"] == 400  # all cells train
    assert model.summary["n_val"] <= n_sample
    assert model.predict("G3", n_cells=5, seed=0).n_vars == 120


def test_streamed_batches_are_sized_to_the_data(tmp_path):
    """A batch larger than the data is capped (as in memory); processes that would get no full
    batch are refused clearly; a loader resumed at an epoch's end starts the next epoch."""
    adata = make_counts_adata()
    path = _write(adata, tmp_path / "c.h5ad")
    model = scdit.fit(path, "condition", **{**KW, "max_steps": 5,
                                            "train": tiny_train(batch_size=1024)})
    assert model.summary["steps"] == 5
    store = open_cells(path)
    rows = np.arange(100)
    atoms = np.zeros((400, 1), np.int64)
    ds = StreamedTrainingSet(store, rows, columns=np.arange(10), prepare=lambda x: x,
                             atoms=atoms, covariates=np.zeros((400, 0), np.int64),
                             batch_size=64)
    ds.set_rank(0, 2)  # fetches of one batch: 64 rows for rank 0, 36 (no full batch) for 1
    with pytest.raises(ValueError, match="no full batch of 64 cells in each of 2 processes"):
        len(ds)
    ds = StreamedTrainingSet(store, np.arange(300), columns=np.arange(10),
                             prepare=lambda x: x, atoms=atoms,
                             covariates=np.zeros((400, 0), np.int64), batch_size=64)
    loader = StreamLoader(ds, seed=0)
    epoch0 = [b["atoms"].shape[0] for b in loader]
    epoch1 = [sorted(b["x"][:, 0].tolist()) for b in loader]
    assert len(epoch0) == len(epoch1) == 4 and loader.state_dict() == {"epoch": 1, "done": 4}
    fresh = StreamLoader(ds, seed=0)
    fresh.load_state_dict({"epoch": 0, "done": 4})  # saved at the end of epoch 0
    assert [sorted(b["x"][:, 0].tolist()) for b in fresh] == epoch1
    fresh.load_state_dict({"epoch": 1, "done": 2})  # saved mid-epoch 1: its last 2 batches
    assert [sorted(b["x"][:, 0].tolist()) for b in fresh] == epoch1[2:]


def test_a_list_of_in_memory_anndata_is_refused_clearly(store):
    adata = make_counts_adata()
    with pytest.raises(TypeError, match="anndata.concat"):
        scdit.fit([adata[:200], adata[200:]], "condition", **KW)
    backed = ad.read_h5ad(store, backed="r")
    with pytest.raises(ValueError, match="cannot stream a view of a backed AnnData"):
        scdit.fit(backed[:100], "condition", **KW)


def test_statistics_pass_is_kept_in_the_checkpoint_dir(tmp_path, monkeypatch):
    """With a checkpoint_dir the checked statistics pass runs once: a resumed fit on unchanged
    data reads it; other data or another layer are counted again, in the same folder."""
    adata = make_counts_adata()
    adata.layers["other"] = np.asarray(adata.X) * 2
    path = _write(adata, tmp_path / "c.h5ad")
    calls = []
    real = ondisk.gene_stats
    monkeypatch.setattr(ondisk, "gene_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = tmp_path / "run"
    kw = {**KW, "max_steps": 4, "train": tiny_train(checkpoint_dir=str(run))}
    first = scdit.fit(path, "condition", **kw)
    assert len(calls) == 1 and len(list(run.glob("gene_stats-*.npz"))) == 1
    again = scdit.fit(path, "condition", **{**kw, "train": tiny_train(checkpoint_dir=str(run),
                                                                     resume=True)})
    assert len(calls) == 1 and _same_weights(again, first)
    store = open_cells(path)
    probe = store.read(np.arange(0, 400, 7))

    def stats(data, layer=None, folder=run):
        st = open_cells(data, layer=layer)
        return ondisk.shared_gene_stats(st, ondisk.store_key(st, probe if layer is None else
                                                             st.read(np.arange(0, 400, 7)),
                                                             layer, "counts"),
                                        "counts", verbose=False, workers=0, cache_dir=str(folder))

    stats(path)
    stats(path)
    assert len(calls) == 2  # the same key: computed once, then read
    stats(path, layer="other")
    assert len(calls) == 3  # another layer of the same file
    os.replace(_write(make_counts_adata(seed=1), tmp_path / "new.h5ad"), path)
    new = open_cells(path)
    key = ondisk.store_key(new, new.read(np.arange(0, 400, 7)), None, "counts")
    ondisk.shared_gene_stats(new, key, "counts", verbose=False, workers=0, cache_dir=str(run))
    assert len(calls) == 4  # other values in the same file


def test_other_processes_wait_for_rank_zero(tmp_path, monkeypatch):
    """A process other than global rank 0 of a multi-process run waits for rank 0's file, fails
    with rank 0's error of this run, ignores an error note left by an earlier run, and a single
    process never waits, whatever its environment says."""
    path = _write(make_counts_adata(), tmp_path / "c.h5ad")
    store = open_cells(path)
    want = gene_stats(store)
    monkeypatch.setattr(ondisk, "is_global_zero", lambda: False)
    monkeypatch.setattr(ondisk, "WAIT_BASE_S", 3.0)
    monkeypatch.setattr(time, "sleep", lambda s: _real_sleep(0.05))

    def call(key, world=2):
        return ondisk.shared_gene_stats(store, key, "counts", verbose=False, workers=0,
                                        cache_dir=str(tmp_path), world=world)

    def rank0_writes(key, delay):
        _real_sleep(delay)
        np.savez(tmp_path / f"gene_stats-{key}.npz",
                 **{f: np.asarray(getattr(want, f)) for f in ondisk._STATS_FIELDS})

    writer = threading.Thread(target=rank0_writes, args=("a", 0.5))
    writer.start()
    got = call("a")  # waits until the file appears
    writer.join()
    np.testing.assert_array_equal(got.norm_var, want.norm_var)
    stale = tmp_path / "gene_stats-b.error"
    stale.write_text("an earlier run")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    with pytest.raises(TimeoutError, match="every process of the run can read"):
        call("b")  # the old note is not this run's: no error from it, a timeout instead
    (tmp_path / "gene_stats-c.error").write_text("ValueError: NaN in rows 5-9")
    with pytest.raises(ValueError, match="pass of global rank 0 failed: ValueError: NaN"):
        call("c")
    got = call("d", world=1)  # one process: computes, even if not "rank 0" by its environment
    np.testing.assert_array_equal(got.norm_var, want.norm_var)


def test_bad_stores_are_refused_before_training(tmp_path):
    adata = make_counts_adata()
    path = _write(adata, tmp_path / "c.h5ad")
    with pytest.raises(KeyError, match="'perturbation' is not an obs column in .*c.h5ad"):
        scdit.fit(path, "perturbation", **KW)
    other = make_counts_adata()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="var_names differ"):
        scdit.fit([path, _write(other, tmp_path / "o.h5ad")], "condition", **KW)
    with pytest.raises(ValueError, match="needs raw counts|cannot train from on-disk"):
        scdit.fit(path, "condition", tokenizer="scvi", **KW)
    # a negative value far from the rows probed first is found by the pass over every cell
    bad = adata.copy()
    bad.X = np.asarray(bad.X).copy()
    bad.X[397, 3] = -1.0
    bad_path = _write(bad, tmp_path / "bad.h5ad")
    with pytest.raises(ValueError, match="negative"):
        scdit.fit(bad_path, "condition", **KW)
    frac = adata.copy()
    frac.X = np.asarray(frac.X).copy()
    frac.X[5, 2] = 2.5  # one non-integer value in a count matrix
    with pytest.raises(ValueError, match="non-integer"):
        scdit.fit(_write(frac, tmp_path / "frac.h5ad"), "condition", representation="counts",
                  **KW)
    with pytest.raises(FileNotFoundError):
        scdit.fit(tmp_path / "missing.h5ad", "condition", **KW)
    csc = tmp_path / "csc.h5ad"
    ad.AnnData(X=sp.csc_matrix(adata.X), obs=adata.obs, var=adata.var).write_h5ad(csc)
    with h5py.File(csc) as f:
        assert f["X"].attrs["encoding-type"] == "csc_matrix"
    with pytest.raises(ValueError, match="CSC"):
        scdit.fit(csc, "condition", **KW)


_CHILD = """
import sys, time
import scdit
from scdit.train import FlowModule

step = FlowModule.training_step


def hold(self, batch, batch_idx):
    while self.global_step == 16:
        time.sleep(1.0)
    return step(self, batch, batch_idx)


FlowModule.training_step = hold
train = scdit.TrainConfig(calibrate_guidance=False, batch_size=64, val_every=10,
                          checkpoint_dir=sys.argv[2], checkpoint_every=7)
scdit.fit(sys.argv[1], "condition", train=train, covariate_keys=["cell_type"],
          preset="tiny", max_steps=40, max_minutes=None, seed=0, verbose=False)
"""


def test_killed_on_disk_fit_resumes_bitwise(store, tmp_path):
    """As for in-memory fits (tests/train/test_resume.py): killed mid-epoch after the step-14
    checkpoint, resumed in-process, it ends with the uninterrupted run's weights; the stream's
    position and its source draws (control source) are restored."""
    kw = {**KW, "covariate_keys": ["cell_type"]}
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    log = open(ckpt / "child_error.txt", "w")  # where _wait_for_checkpoint looks
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(store), str(ckpt)], env=env,
                             cwd=root, stdout=subprocess.DEVNULL, stderr=log)
    try:
        uninterrupted = scdit.fit(store, "condition", **kw)
        _wait_for_checkpoint(ckpt / CHECKPOINT_NAME, 14, child)
    finally:
        child.kill()
        status = child.wait()
        log.close()
    assert status == -signal.SIGKILL
    train = tiny_train(val_every=10, checkpoint_dir=str(ckpt), checkpoint_every=7, resume=True)
    resumed = scdit.fit(store, "condition", **{**kw, "train": train})
    assert resumed.summary["resumed_from_step"] == 14
    assert resumed.summary["history"] == uninterrupted.summary["history"]
    assert _same_weights(resumed, uninterrupted)
    assert read_checkpoint(ckpt / CHECKPOINT_NAME)["step"] == 40
    w = torch.cat([p.flatten() for p in resumed.field.parameters()])
    assert torch.isfinite(w).all()


_DDP_SCRIPT = """
import json, os, sys
import scdit
from scdit.data import StreamedTrainingSet
from scdit.train import FlowModule, digest, is_global_zero
import scdit._fit_ondisk as ondisk
import torch


def main(path, out, workers):
    rows = []
    batch = StreamedTrainingSet._batch

    step = FlowModule.training_step

    def tag(self, x, r, rng):  # runs where the batch is read: a DataLoader worker, or here
        out = batch(self, x, r, rng)
        out["rows_read"] = torch.as_tensor(r)
        return out

    def record(self, b, idx):  # the batches trained on, in this process
        rows.append(sorted(int(i) for i in b["rows_read"]))
        return step(self, b, idx)

    StreamedTrainingSet._batch, FlowModule.training_step = tag, record
    passes = []
    stats = ondisk.gene_stats
    ondisk.gene_stats = lambda *a, **k: passes.append(1) or stats(*a, **k)
    train = {"devices": 2, "accelerator": "cpu", "batch_size": 32, "max_steps": 30,
             "compile": False, "val_every": 10, "seed": 0, "loader_workers": workers,
             "checkpoint_dir": os.path.join(out, "run")}
    model = scdit.fit(path, "condition", covariate_keys=["cell_type"], preset="tiny",
                      verbose=False, train=train)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    json.dump({"rows": rows, "steps": model.summary["steps"], "passes": len(passes),
               "weights": digest(*model.field.state_dict().values())},
              open(os.path.join(out, f"rank{rank}.json"), "w"))
    if is_global_zero():
        model.save(os.path.join(out, "model"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_two_processes_stream_disjoint_cells_from_disk(tmp_path, workers):
    """DDP on a store (2 CPU processes, gloo): each process streams its own share of the
    fetches, both take the same number of steps and end with the same model, saved once; with
    DataLoader workers too (each worker reads its process's share)."""
    conditions = {"ctrl": 400, "G1": 150, "G2": 150, "G3": 150, "G1+G2": 150}
    path = _write(make_counts_adata(conditions=conditions), tmp_path / "cells.h5ad")
    script = tmp_path / "fit_disk_ddp.py"
    script.write_text(_DDP_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(script), str(path), str(tmp_path), str(workers)],
                          env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 30 and r0["weights"] == r1["weights"]
    # the statistics pass ran once, in rank 0; rank 1 read it from the run's checkpoint_dir
    assert (r0["passes"], r1["passes"]) == (1, 0)
    # 952 training cells, 29 batches of 32: fetches of one batch (at least 8 per rank), dealt
    # in turn: 15 full batches for rank 0, 14 for rank 1; both take 14 an epoch, disjoint
    per_epoch = 14
    assert len(r0["rows"]) == len(r1["rows"]) == 30  # no batch read beyond an epoch's end
    for e in range(2):
        a, b = (np.concatenate(r["rows"][e * per_epoch:(e + 1) * per_epoch]) for r in (r0, r1))
        assert len(np.unique(a)) == len(a) == per_epoch * 32
        assert not set(a.tolist()) & set(b.tolist())
    model = scdit.load(tmp_path / "model")
    assert model.summary["on_disk"]["sources"] == [str(path)]
    assert model.predict("G1", covariates={"cell_type": "T"}, n_cells=4, seed=0).n_obs == 4
