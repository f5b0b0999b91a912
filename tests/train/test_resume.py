"""Checkpoints and resume: a fit killed with SIGKILL and resumed ends bitwise where an
uninterrupted fit ends; checkpoints are written with or without a validation split; resuming
with other data or settings is refused with a clear error."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

import scdit
from scdit.train import CHECKPOINT_NAME, EpochBatchSampler, read_checkpoint
from tests.helpers import dense, make_counts_adata, tiny_train

SMALL = {"ctrl": 60, "G1": 30, "G2": 30, "G1+G2": 30}  # 150 cells: no validation split


def _fit(adata, train: scdit.TrainConfig, **kw):
    kw = {"covariate_keys": ["cell_type"], "preset": "tiny", "max_steps": 40,
          "max_minutes": None, "seed": 0, "verbose": False, **kw}
    return scdit.fit(adata, "condition", train=train, **kw)


def _same_weights(a, b) -> bool:
    sa, sb = a.field.state_dict(), b.field.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _wait_for_checkpoint(path, step: int, child: subprocess.Popen,
                         timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and read_checkpoint(path)["step"] == step:
            return
        if child.poll() is not None:
            err = path.parent / "child_error.txt"
            pytest.fail(f"the training process ended (status {child.returncode}) before step "
                        f"{step}: {err.read_text() if err.exists() else 'no output'}")
        time.sleep(0.05)
    pytest.fail(f"no checkpoint of step {step} after {timeout:.0f} s")


_CHILD = """
import sys, time
import scdit
from scdit.train import FlowModule
from tests.helpers import make_counts_adata, tiny_train

step = FlowModule.training_step


def hold(self, batch, batch_idx):
    while self.global_step == 16:
        time.sleep(1.0)
    return step(self, batch, batch_idx)


FlowModule.training_step = hold
train = tiny_train(val_every=10, checkpoint_dir=sys.argv[1], checkpoint_every=7)
scdit.fit(make_counts_adata(), "condition", train=train, covariate_keys=["cell_type"],
          preset="tiny", max_steps=40, max_minutes=None, seed=0, verbose=False)
"""


def test_sigkilled_fit_resumes_bitwise(tmp_path):
    """A child process trains (control source: loader, source draws and global random states
    all matter), checkpoints every 7 steps and is held at step 16, inside the third epoch
    (5 batches per epoch); the parent kills it with SIGKILL once the step-14 checkpoint (mid
    epoch) exists, resumes in-process and must end with the uninterrupted run's weights,
    bitwise, and predict the same cells. The child is a fresh interpreter (a forked copy of a
    pytest process that has started threads can deadlock)."""
    adata = make_counts_adata()
    base = tiny_train(val_every=10)
    ckpt = dataclasses.replace(base, checkpoint_dir=str(tmp_path), checkpoint_every=7)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "child_error.txt", "w")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], env=env, cwd=root,
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        uninterrupted = _fit(adata, base)  # meanwhile, in the parent
        _wait_for_checkpoint(tmp_path / CHECKPOINT_NAME, 14, child)
    finally:
        child.kill()  # SIGKILL
        status = child.wait()
        log.close()
    assert status == -signal.SIGKILL
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 14
    resumed = _fit(adata, dataclasses.replace(ckpt, resume=True))
    assert resumed.summary["resumed_from_step"] == 14
    assert resumed.summary["steps"] == uninterrupted.summary["steps"] == 40
    assert resumed.summary["history"] == uninterrupted.summary["history"]
    assert _same_weights(resumed, uninterrupted)
    a = resumed.predict("G1", covariates={"cell_type": "T"}, n_cells=20, seed=3)
    b = uninterrupted.predict("G1", covariates={"cell_type": "T"}, n_cells=20, seed=3)
    assert np.array_equal(dense(a.X), dense(b.X))
    snapshot = scdit.load(tmp_path / "model")  # the model as of the latest checkpoint: the last
    assert snapshot.summary["checkpoint_step"] == 40
    assert _same_weights(snapshot, resumed)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A finished 6-step run on 150 cells (no validation split), default checkpoint interval
    (``val_every`` = 3 steps)."""
    folder = tmp_path_factory.mktemp("run")
    adata = make_counts_adata(conditions=SMALL)
    train = tiny_train(val_every=3, checkpoint_dir=str(folder))
    model = _fit(adata, train, max_steps=6, covariate_keys=())
    return adata, train, model


def test_checkpoints_without_validation_split(small_run):
    adata, train, model = small_run
    assert model.summary["n_val"] == 0
    assert read_checkpoint(f"{train.checkpoint_dir}/{CHECKPOINT_NAME}")["step"] == 6
    snapshot = scdit.load(f"{train.checkpoint_dir}/model")
    assert snapshot.summary["checkpoint_step"] == 6
    assert _same_weights(snapshot, model)  # the last checkpoint was the last step
    assert snapshot.predict("G1", n_cells=5, seed=0).n_obs == 5


def test_resuming_a_finished_run_returns_its_model(small_run):
    adata, train, model = small_run
    again = _fit(adata, dataclasses.replace(train, resume=True), max_steps=6, covariate_keys=())
    assert again.summary["resumed_from_step"] == 6 and again.summary["steps"] == 6
    assert _same_weights(again, model)


def test_resume_refuses_other_settings_or_data(small_run):
    adata, train, _ = small_run
    resume = dataclasses.replace(train, resume=True)
    with pytest.raises(ValueError, match=r"another configuration \(train\.seed: 0 in the "
                                         r"checkpoint, 1 now"):
        _fit(adata, resume, max_steps=6, covariate_keys=(), seed=1)
    with pytest.raises(ValueError, match=r"another configuration \(train\.max_steps"):
        _fit(adata, resume, max_steps=8, covariate_keys=())
    other = adata.copy()
    other.X[0, 3] += 1.0
    with pytest.raises(ValueError, match=r"other data \(expression \(sampled rows\) differ"):
        _fit(other, resume, max_steps=6, covariate_keys=())
    other = adata.copy()
    other.obs["condition"] = other.obs["condition"].astype(str)
    other.obs.iloc[0, 0] = "G2"
    with pytest.raises(ValueError, match=r"other data \(cell annotations differ"):
        _fit(other, resume, max_steps=6, covariate_keys=())


def test_resume_of_an_older_versions_checkpoint(tmp_path):
    """A checkpoint written before a setting existed ran with its legacy value: resuming with
    another value names the setting and that value; resuming with it continues the run."""
    adata = make_counts_adata(conditions=SMALL)
    train = tiny_train(val_every=3, checkpoint_dir=str(tmp_path / "old"))
    plain = {"target_marks": False}  # what a version before target marks ran
    model = _fit(adata, train, max_steps=6, covariate_keys=(), conditions=plain)
    path = tmp_path / "old" / CHECKPOINT_NAME
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    del ckpt["scdit"]["meta"]["config"]["conditions.target_marks"]  # as an older version wrote
    torch.save(ckpt, path)
    resume = dataclasses.replace(train, resume=True)
    with pytest.raises(ValueError, match=r"before conditions\.target_marks existed \(that "
                                         r"version ran as conditions\.target_marks = False\)"):
        _fit(adata, resume, max_steps=6, covariate_keys=(), conditions={"target_marks": True})
    again = _fit(adata, resume, max_steps=6, covariate_keys=(), conditions=plain)
    assert again.summary["resumed_from_step"] == 6 and _same_weights(again, model)


def test_resume_of_a_checkpoint_from_before_noise_pairing(tmp_path):
    """A noise-source checkpoint without ``flow.pairing`` trained with independent pairs."""
    adata = make_counts_adata(conditions=SMALL)
    train = tiny_train(val_every=3, checkpoint_dir=str(tmp_path / "old"))
    plain = {"pairing": "independent"}
    model = _fit(adata, train, max_steps=6, covariate_keys=(), flow=plain)
    path = tmp_path / "old" / CHECKPOINT_NAME
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    del ckpt["scdit"]["meta"]["config"]["flow.pairing"]
    torch.save(ckpt, path)
    resume = dataclasses.replace(train, resume=True)
    with pytest.raises(ValueError, match=r"flow\.pairing = 'independent'"):
        _fit(adata, resume, max_steps=6, covariate_keys=())
    again = _fit(adata, resume, max_steps=6, covariate_keys=(), flow=plain)
    assert again.summary["resumed_from_step"] == 6 and _same_weights(again, model)


def test_existing_checkpoint_is_not_overwritten_without_resume(small_run):
    adata, train, _ = small_run
    with pytest.raises(ValueError, match=r"already holds the checkpoint of a run \(step 6\)\. "
                                         r"Pass train=TrainConfig\(\.\.\., resume=True\)"):
        _fit(adata, train, max_steps=6, covariate_keys=())


def test_resume_without_checkpoint_warns_and_trains(tmp_path):
    adata = make_counts_adata(conditions=SMALL)
    train = tiny_train(checkpoint_dir=str(tmp_path / "new"), checkpoint_every=50, resume=True)
    with pytest.warns(UserWarning, match="holds no checkpoint"):
        model = _fit(adata, train, max_steps=2, covariate_keys=())
    assert model.summary["steps"] == 2 and "resumed_from_step" not in model.summary
    # the last step is checkpointed even when the run is shorter than checkpoint_every
    assert read_checkpoint(tmp_path / "new" / CHECKPOINT_NAME)["step"] == 2


@pytest.mark.parametrize(("kwargs", "phrase"), [
    ({"resume": True}, "resume=True needs checkpoint_dir"),
    ({"checkpoint_every": 5}, "checkpoint_every=5 needs checkpoint_dir"),
    ({"checkpoint_dir": "d", "checkpoint_every": 0}, "checkpoint_every must be an integer ≥ 1"),
])
def test_checkpoint_options_are_checked(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        scdit.TrainConfig(**kwargs)


def _batches(sampler, n: int, done: int = 0) -> list[list[int]]:
    """``n`` batches, taking ``len(sampler)`` per epoch as Lightning does (never past the end);
    ``done``: batches of the current epoch already taken."""
    out = []
    while len(out) < n:
        it = iter(sampler)
        out.extend(itertools.islice(it, min(len(sampler) - done, n - len(out))))
        done = 0
    return out


def test_epoch_sampler_matches_torch_and_resumes_anywhere():
    """Same batches as torch's seeded RandomSampler + BatchSampler (as the loader used before);
    a sampler restored from the state after k batches (mid-epoch or at an epoch's end)
    continues with batch k + 1."""
    ref = BatchSampler(RandomSampler(range(23), generator=torch.Generator().manual_seed(3)), 5,
                       drop_last=True)
    whole = _batches(EpochBatchSampler(23, 5, seed=3), 12)  # 4 batches per epoch
    assert whole == _batches(ref, 12)
    for k in (2, 4, 6):
        first = EpochBatchSampler(23, 5, seed=3)
        assert _batches(first, k) == whole[:k]
        restored = EpochBatchSampler(23, 5, seed=3)
        restored.load_state_dict(first.state_dict())
        assert _batches(restored, 12 - k, done=k % 4) == whole[k:], k
