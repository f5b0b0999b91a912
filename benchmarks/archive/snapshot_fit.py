"""Fit a quality-suite setting with fit's defaults (plus extra fit arguments), saving the current EMA
weights as a loadable model every N steps (session 23, issue #17): does a validation on generated
cells pick a better state than the validation loss, and does a longer schedule help?

Usage, from the repository root:
  python benchmarks/archive/snapshot_fit.py SETTING SEED EVERY OUT_DIR ["{'max_steps': 8000}"]
Models: OUT_DIR/snap_<step> (EMA at that step) and OUT_DIR/final (what fit returned).
Exploratory code (patches two private functions; not a maintained suite).
"""
import os, sys, time, argparse, copy
sys.path.insert(0, "benchmarks")
import torch
torch.set_num_threads(1)
import scdit, scdit._api as api, scdit._resume as res
from scdit.train import _checkpoint as ck
from suites.quality import settings
name, seed, every, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}
orig = res.snapshot_writer
def writer(path, *a, **k):
    def write(field, step):
        orig(path.parent.parent / f"snap_{step}", *a, **k)(field, step)
    return write
api.snapshot_writer = writer
def _write_snapshot(self, pl_module):
    if not self._snapshot_due or self.on_save is None or self.last_step is None:
        return
    self._snapshot_due = False
    saved = ck.rng_state()
    try:
        f = copy.deepcopy(pl_module.ema.module).cpu().eval()
        self.on_save(f, self.last_step)
    finally:
        ck.set_rng_state(saved)
ck.StepCheckpoint._write_snapshot = _write_snapshot
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
t0 = time.time()
tr = {"checkpoint_dir": f"{out}/ckpt", "checkpoint_every": every, **extra.pop("train", {})}
m = scdit.fit(task.train, st.condition_key, control=st.control,
              covariate_keys=(st.covariate_key,) if st.covariate_key else (), seed=seed,
              verbose=False, train=tr, **extra)
print("fit", time.time() - t0, m.summary.get("steps"), m.summary.get("history"), flush=True)
m.save(f"{out}/final", overwrite=True)
