"""Off-target mean changes of held-out Papalexi targets: generated (generator alone) vs real
(session 27, issue #17: why discrimination stays at 0.5 on unseen targets).

Usage, from the repository root, with a model saved by ``unseen_marks.py``:
  python benchmarks/archive/unseen_offtarget.py FOLD MODEL_DIR
Prints, with every perturbation target that is a measured gene left out (as the discrimination
metric does): the L1 norm of each held-out target's mean change from control, real and
generated; the correlations between the generated changes, between the real ones, and of each
generated change with each real one. Exploratory code: the quality suite's split and predict
helpers.
"""
import argparse
import sys

sys.path.insert(0, "benchmarks")
import numpy as np
import torch

torch.set_num_threads(1)
import scdit
from scdit.data import to_log1p
from suites.common import predict_cells
from suites.quality import settings

fold, model_dir = sys.argv[1], sys.argv[2]
task = settings()["papalexi_unseen"].make(fold, False, argparse.Namespace())
model = scdit.load(model_dir)
conds = sorted(task.n_cells)
pred = predict_cells(model, conds, task.n_cells, task.source, seed=0, quick=False,
                     generator_only=True)


def means(a):
    X = to_log1p(a.X)
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
    return {c: X[(a.obs.perturbation == c).to_numpy()].mean(0)
            for c in a.obs.perturbation.unique()}


real, gen = means(task.real), means(pred)
genes = list(task.real.var_names)
keep = np.ones(len(genes), bool)
keep[[genes.index(c) for c in list(model.vocab.atoms) + conds if c in genes]] = False
dR = {c: (real[c] - real["control"])[keep] for c in conds}
dG = {c: (gen[c] - real["control"])[keep] for c in conds}
print("L1 real", {c: round(float(np.abs(dR[c]).sum()), 2) for c in conds},
      "generated", {c: round(float(np.abs(dG[c]).sum()), 2) for c in conds})
print("corr between generated", np.round(np.corrcoef([dG[c] for c in conds]), 3).tolist())
print("corr between real", np.round(np.corrcoef([dR[c] for c in conds]), 3).tolist())
print("generated (rows) vs real (columns)", conds,
      np.round([[np.corrcoef(dG[a], dR[b])[0, 1] for b in conds] for a in conds], 3).tolist())
