"""Training on several devices (Lightning DDP; gloo on CPUs): each process takes its own share of
every epoch's batches and draws its own noise, the gradients are averaged so that every process
ends with the same model, and a 2-process fit with batch B learns like a 1-process fit with
batch 2B. A run whose processes saw the same batches, drew the same noise or did not average
their gradients trains about as well at this scale, so the process tests check those directly
(disjoint rows, distinct random states, identical weights) besides comparing the losses."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

import scdit
from scdit.train import (
    EpochBatchSampler,
    FlowModule,
    ResumableLoader,
    _loader,
    _module,
    is_global_zero,
    resolve_strategy,
    rng_state,
    set_rng_state,
)
from tests.helpers import dense, make_counts_adata

ROOT = Path(__file__).resolve().parents[2]
CONDITIONS = {"ctrl": 400, "G1": 150, "G2": 150, "G3": 150, "G1+G2": 150}  # 1,000 cells
BATCH = 32  # per process


def _epochs(sampler: EpochBatchSampler, n_epochs: int) -> list[list[list[int]]]:
    return [list(sampler) for _ in range(n_epochs)]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_disjoint_batches_of_one_permutation(world):
    n, bs = 103, 10  # 10 full batches an epoch
    one = _epochs(EpochBatchSampler(n, bs, seed=4), 3)
    ranks = [_epochs(EpochBatchSampler(n, bs, seed=4, rank=r, world_size=world), 3)
             for r in range(world)]
    per_rank = 10 // world
    for e in range(3):
        got = [ranks[r][e] for r in range(world)]
        assert all(len(g) == per_rank for g in got)  # every process steps as often
        rows = [i for g in got for b in g for i in b]
        assert len(rows) == len(set(rows)) == per_rank * world * bs  # disjoint
        # process r's i-th batch is batch r + i * world of the one-process epoch
        for r in range(world):
            assert got[r] == [one[e][r + i * world] for i in range(per_rank)]


def test_one_process_sampler_is_unsharded():
    gen = torch.Generator().manual_seed(7)
    ref = list(BatchSampler(RandomSampler(range(50), generator=gen), 8, drop_last=True))
    assert list(EpochBatchSampler(50, 8, seed=7)) == ref
    assert list(EpochBatchSampler(50, 8, seed=7, rank=0, world_size=1)) == ref


def test_sharded_sampler_resumes_its_own_position():
    def make():
        return EpochBatchSampler(90, 10, seed=1, rank=1, world_size=2)  # 4 batches an epoch

    full = [b for e in _epochs(make(), 2) for b in e]
    first = make()
    it = iter(first)
    head = [next(it) for _ in range(3)]
    state = first.state_dict()
    second = make()
    second.load_state_dict(state)
    rest = list(second) + list(second)
    assert head + rest[:len(full) - 3] == full


def test_sampler_needs_a_batch_for_every_process():
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        len(EpochBatchSampler(25, 10, rank=0, world_size=3))
    with pytest.raises(ValueError, match="rank 2"):
        EpochBatchSampler(25, 10, rank=2, world_size=2)


class _Draws(torch.utils.data.Dataset):
    def __init__(self):
        self._rng = np.random.default_rng(0)

    def __len__(self):
        return 40

    def __getitem__(self, rows):
        return torch.as_tensor(self._rng.random(len(rows)))


def test_loader_reseeds_the_dataset_generators_per_process(monkeypatch):
    def first_draws(rank, world):
        monkeypatch.setattr(_loader, "rank_and_world", lambda: (rank, world))
        return next(iter(ResumableLoader(_Draws(), 4, shuffle=True, seed=0))).tolist()

    alone = first_draws(0, 1)
    assert alone == np.random.default_rng(0).random(4).tolist()  # one process: untouched
    r0, r1 = first_draws(0, 2), first_draws(1, 2)
    assert r0 != r1 and alone not in (r0, r1)
    assert first_draws(1, 2) == r1  # reproducible


def test_loader_state_resumes_each_process_its_own_draws(monkeypatch):
    monkeypatch.setattr(_loader, "rank_and_world", lambda: (1, 2))
    rank0 = {"_rng": np.random.default_rng(99).bit_generator.state}
    monkeypatch.setattr(_loader, "gather_objects", lambda obj: [rank0, obj])
    loader = ResumableLoader(_Draws(), 4, shuffle=True, seed=0)
    it = iter(loader)
    next(it)
    state = loader.state_dict()  # process 1 of 2, after its first batch
    assert state["dataset_rngs_by_rank"][0] is rank0
    restored = ResumableLoader(_Draws(), 4, shuffle=True, seed=0)
    restored.load_state_dict(state)
    assert torch.equal(next(iter(restored)), next(it))  # its own next draws, not rank 0's
    monkeypatch.setattr(_loader, "rank_and_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="same devices and num_nodes"):
        ResumableLoader(_Draws(), 4, shuffle=True).load_state_dict(state)


def test_checkpoint_resumes_each_process_its_own_random_states(monkeypatch, log1p_model):
    def module():
        return FlowModule(log1p_model.field, log1p_model.tokenizer, lr=1e-3, weight_decay=0.0,
                          warmup_steps=1, max_steps=10, ema_decay=0.9, cond_dropout=0.1,
                          time_sampling="uniform")

    torch.manual_seed(1)
    rank0 = rng_state()
    torch.manual_seed(2)
    monkeypatch.setattr(_module, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(_module, "gather_objects", lambda obj: [rank0, obj])
    ckpt: dict = {}
    module().on_save_checkpoint(ckpt)
    mine = torch.rand(3)  # what process 1 draws next
    restored = module()
    restored.on_load_checkpoint(ckpt)
    set_rng_state(restored._resume_rng)
    assert torch.equal(torch.rand(3), mine)
    monkeypatch.setattr(_module, "rank_and_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="same devices and num_nodes"):
        module().on_load_checkpoint(ckpt)


def test_is_global_zero_reads_the_launcher_environment(monkeypatch):
    for key in ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID",
                "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_global_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "0")
    assert is_global_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_global_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "3")
    assert not is_global_zero()


def test_strategy_auto_is_ddp_on_several_devices():
    assert resolve_strategy("auto", 1, 1) == "auto"
    assert resolve_strategy("auto", 2, 1) == "ddp"
    assert resolve_strategy("auto", 1, 4) == "ddp"
    assert resolve_strategy("ddp_spawn", 2, 1) == "ddp_spawn"


def test_flow_module_pickles_for_spawned_processes(log1p_model):
    """``ddp_spawn`` pickles the module: its (closure) time sampler is rebuilt."""
    module = FlowModule(log1p_model.field, log1p_model.tokenizer, lr=1e-3, weight_decay=0.0,
                        warmup_steps=1, max_steps=10, ema_decay=0.9, cond_dropout=0.1,
                        time_sampling="logit_normal", logit_mean=0.5, logit_std=0.8)
    copy = pickle.loads(pickle.dumps(module))
    g = torch.Generator().manual_seed(0)
    t = copy.sample_t(5, g, torch.device("cpu"))
    assert t.shape == (5,) and torch.equal(t, module.sample_t(5, torch.Generator().manual_seed(0),
                                                              torch.device("cpu")))


# A fit under Lightning's launcher: this script is started once and Lightning runs it again for
# the second process ("ddp"), or starts processes that import it ("ddp_spawn", mode "spawn").
# Each process writes what it saw; global rank 0 also saves the model.
_SCRIPT = """
import json, os, sys
import torch
import scdit
from scdit.data import CellDataset
from scdit.train import FlowModule, digest, is_global_zero
from tests.helpers import make_counts_adata


def main(out, mode, batch, steps):
    losses, rows, first = [], [], {}
    train_step, get = FlowModule.training_step, CellDataset.__getitem__

    def step(self, b, idx):
        if mode == "kill" and self.global_step == 16:
            os._exit(3)  # both processes die after the step-14 checkpoint
        first.setdefault("rng", digest(torch.get_rng_state()))
        loss = train_step(self, b, idx)
        losses.append(float(loss.detach()))
        return loss

    def record(self, r):
        if not self.fixed_source:  # training batches (the validation set's draws are fixed)
            rows.append(sorted(int(i) for i in r))
        return get(self, r)

    FlowModule.training_step, CellDataset.__getitem__ = step, record
    train = {"devices": 2, "accelerator": "cpu", "batch_size": batch, "max_steps": steps,
             "compile": False, "val_every": 50, "seed": 0,
             "strategy": "ddp_spawn" if mode == "spawn" else "ddp"}
    kw = {"source": "noise"}
    if mode in ("plain", "kill", "resume"):  # control cells as the source: their draws resume
        train.update(checkpoint_dir=os.path.join(out, "ckpt"), checkpoint_every=7,
                     resume=mode == "resume", val_every=10)
        kw = {"source": "control", "covariate_keys": ["cell_type"]}
    model = scdit.fit(make_counts_adata(conditions=CONDITIONS), "condition", preset="tiny",
                      verbose=False, train=train, **kw)
    # "spawn": this process did not train (no process group here): it reports as rank 0
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    json.dump({"losses": losses, "rows": rows, "rng": first.get("rng"),
               "steps": model.summary["steps"], "history": model.summary["history"],
               "weights": digest(*model.field.state_dict().values())},
              open(os.path.join(out, f"{mode}{rank}.json"), "w"))
    if is_global_zero():
        model.save(os.path.join(out, "model"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
"""


def _launch(tmp_path: Path, mode: str, steps: int) -> list[dict]:
    """Run the script in 2 processes; what each process wrote (the main one's for "spawn")."""
    script = tmp_path / "fit_ddp.py"
    script.write_text(f"CONDITIONS = {CONDITIONS!r}\n" + _SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), mode, str(BATCH),
                           str(steps)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    if mode == "kill":
        assert proc.returncode == 3, proc.stderr[-3000:]
        return []
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"{mode}{r}.json").read_text())
            for r in range(1 if mode == "spawn" else 2)]


def test_two_processes_train_like_one_with_twice_the_batch(tmp_path, monkeypatch):
    """Noise as the source: the average gradient of 2 processes with batch B is that of one with
    batch 2B (with control cells as the source the OT pairing is within each process's batch)."""
    steps = 300
    r0, r1 = _launch(tmp_path, "full", steps)
    # the same model in both processes: the gradients were averaged
    assert r0["steps"] == r1["steps"] == steps
    assert r0["weights"] == r1["weights"] and r0["history"] == r1["history"]
    # different noise, times and dropout in each process
    assert r0["rng"] != r1["rng"]
    # each process its own batches: disjoint within an epoch, equal numbers
    per_epoch = int(0.95 * sum(CONDITIONS.values())) // BATCH // 2
    assert len(r0["rows"]) == len(r1["rows"]) == steps
    for e in range(steps // per_epoch):
        a, b = (np.concatenate(r["rows"][e * per_epoch:(e + 1) * per_epoch]) for r in (r0, r1))
        assert len(np.unique(a)) == len(a) and not set(a.tolist()) & set(b.tolist())

    # one process, batch 2B, same data and seed
    losses = []
    train_step = FlowModule.training_step

    def step(self, batch, idx):
        loss = train_step(self, batch, idx)
        losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(FlowModule, "training_step", step)
    one = scdit.fit(make_counts_adata(conditions=CONDITIONS), "condition", source="noise",
                    preset="tiny", verbose=False, train={"batch_size": 2 * BATCH, "max_steps": steps,
                                          "calibrate_guidance": False,
                                          "accelerator": "cpu", "compile": False,
                                          "val_every": 50, "seed": 0})
    two_loss = (np.asarray(r0["losses"]) + np.asarray(r1["losses"])) / 2  # (steps,)
    val_one = [h["val_loss"] for h in one.summary["history"]]
    val_two = [h["val_loss"] for h in r0["history"]]
    assert len(val_one) == len(val_two) == steps // 50
    # both learnt, by as much: the validation split and draws are the same (a paired
    # comparison; 3 seeds measured: final validation losses within 0.007, mean training losses
    # of the last 50 steps within 0.03, improvements 0.2 to 0.3 from step 50)
    assert val_two[-1] < val_two[0] - 0.1 and val_one[-1] < val_one[0] - 0.1
    assert abs(val_two[-1] - val_one[-1]) < 0.03
    assert abs(two_loss[-50:].mean() - np.mean(losses[-50:])) < 0.06

    model = scdit.load(tmp_path / "model")  # saved once, by global rank 0
    assert model.summary["steps"] == steps
    pred = model.predict("G1", n_cells=20, seed=0, verbose=False)
    assert pred.n_obs == 20 and np.isfinite(dense(pred.X)).all()


@pytest.mark.slow
def test_two_process_fit_resumes_bitwise(tmp_path):
    """Killed after its step-14 checkpoint (mid epoch) and resumed, a 2-process run ends with
    the uninterrupted run's weights: the checkpoint holds every process's random states and
    source draws."""
    steps = 30
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    cut_dir.mkdir()
    ref = _launch(full_dir, "plain", steps)
    _launch(cut_dir, "kill", steps)
    resumed = _launch(cut_dir, "resume", steps)
    assert resumed[0]["weights"] == resumed[1]["weights"] == ref[0]["weights"]
    assert resumed[0]["history"] == ref[0]["history"]
    assert (cut_dir / "ckpt" / "last.ckpt").exists()
    assert not list((cut_dir / "ckpt").glob(".last.ckpt.*.tmp"))


@pytest.mark.slow
def test_spawned_processes_hand_back_the_model(tmp_path):
    """``ddp_spawn``: the process that started the run gets rank 0's EMA, best state, history
    and step count, the model a ``ddp`` run gives."""
    steps = 60
    (tmp_path / "ddp").mkdir()
    (tmp_path / "spawn").mkdir()
    ref = _launch(tmp_path / "ddp", "full", steps)[0]
    (got,) = _launch(tmp_path / "spawn", "spawn", steps)
    assert got["steps"] == steps and got["history"] == ref["history"]
    assert got["weights"] == ref["weights"]


def test_fsdp_is_refused_clearly(counts_adata):
    with pytest.raises(ValueError, match="strategy='fsdp' is not supported"):
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False, max_steps=5,
                  train={"strategy": "fsdp", "devices": 2, "accelerator": "cpu"})
