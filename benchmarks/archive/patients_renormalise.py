"""Held-out glioblastoma patients: the generator alone and the default with and without the
rescaling of generated cells to the normalisation's total (session 25, issue #17).

Usage, from the repository root (models are saved to and reused from OUT_DIR/pat_<P>_s<seed>):
  python benchmarks/archive/patients_renormalise.py PATIENT SEED OUT_DIR
Prints Pearson Δ / energy distance of context_shift, then "old" (the rescaling switched off by
patching EffectTargets.unseen_here) and "new" (today's predict), generator alone and default.
Exploratory code: the quality suite's split, fit and predict helpers.
"""
import argparse
import os
import sys

sys.path.insert(0, "benchmarks")
import numpy as np
import torch

torch.set_num_threads(1)
import scdit
import scdit.model._targets as targets
from suites.common import fit_model, predict_cells
from suites.quality import settings

patient, seed, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
task = settings()["glioblastoma_patients"].make(patient, False, argparse.Namespace())
path = f"{out_dir}/pat_{patient}_s{seed}"
if os.path.exists(path):
    model = scdit.load(path)
else:
    model = fit_model(task.train, "condition", control="ctrl", seed=seed, quick=False,
                      covariate_keys=("patient_id",))
    model.save(path)
common = dict(control="ctrl", train=task.train, covariate_key="patient_id", seed=seed)
new = targets.EffectTargets.unseen_here
base = None
for mode in ("old", "new"):
    targets.EffectTargets.unseen_here = new if mode == "new" else \
        (lambda self, label, cov_df, n: np.zeros(n, dtype=bool))
    for gen in (True, False):
        pred = predict_cells(model, sorted(task.n_cells), task.n_cells, task.source, seed=seed,
                             quick=False, generator_only=gen)
        df = scdit.evaluate(pred, task.real, "condition", method_name="m",
                            baselines=() if base is not None else ("context_shift",), **common)
        t = scdit.evaluate.summarize(df)
        if base is None:
            base = t.loc["context_shift"]
            print(patient, "context_shift",
                  base[["pearson_delta", "energy_distance"]].round(3).tolist())
        print(patient, seed, mode, "generator" if gen else "default",
              t.loc["m"][["pearson_delta", "energy_distance"]].round(3).tolist(), flush=True)
