"""Unseen Papalexi targets with target marks: the generator alone and the default against the
mean baseline, and each held-out target's on-target ratio (session 26, issue #17).

Usage, from the repository root (models are saved to and reused from OUT_DIR/marks_<FOLD>_s<seed>):
  python benchmarks/archive/unseen_marks.py FOLD SEED OUT_DIR
FOLD is a quality-suite holdout of ``papalexi_unseen`` (fold1, fold2, fold3, most6). Prints
Pearson Δ / top-20-DE Pearson Δ / energy distance / discrimination L1 of the mean baseline,
the generator alone and the default, then, per held-out target, the mean of the target gene's
normalised expression over its control mean: real cells, generator alone, default.
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
from suites.common import fit_model, predict_cells
from suites.quality import PAPALEXI_FOLDS, settings

fold, seed, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
task = settings()["papalexi_unseen"].make(fold, False, argparse.Namespace())
path = f"{out_dir}/marks_{fold}_s{seed}"
if os.path.exists(path):
    model = scdit.load(path)
else:
    model = fit_model(task.train, "perturbation", control="control", seed=seed, quick=False)
    model.save(path)
print("target marks", model.summary.get("target_marks"), "steps", model.summary.get("steps"))
common = dict(control="control", train=task.train, covariate_key=None, seed=seed)
cols = ["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]
for gen in (True, False):
    pred = predict_cells(model, sorted(task.n_cells), task.n_cells, task.source, seed=seed,
                         quick=False, generator_only=gen)
    df = scdit.evaluate(pred, task.real, "perturbation", baselines=("mean",) if gen else (),
                        method_name="m", **common)
    t = scdit.evaluate.summarize(df)
    if gen:
        print(fold, seed, "mean", t.loc["mean"][cols].round(3).tolist())
    print(fold, seed, "generator" if gen else "default", t.loc["m"][cols].round(3).tolist(),
          flush=True)


def dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def normalised(X, j):  # the gene's share of each cell's counts, × 1e4
    X = dense(X)
    return X[:, j] / np.maximum(X.sum(1), 1) * 1e4


ctrl = task.train[task.train.obs.perturbation == "control"]
for g in PAPALEXI_FOLDS[fold]:
    j = task.train.var_names.get_loc(g)
    c = normalised(ctrl.X, j).mean()
    real = normalised(task.real[task.real.obs.perturbation == g].X, j).mean()
    src = None if task.source is None else task.source[:300]
    ratios = [normalised(model.predict(g, n_cells=300, seed=seed, effects=e, source=src).X,
                         j).mean() / c for e in ("none", "auto")]
    print(g, "real", round(real / c, 3), "generator", round(ratios[0], 3), "default",
          round(ratios[1], 3))
