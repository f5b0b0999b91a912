"""Norman doubles: where the generator alone loses against additive (session 34, issue #17).

For a saved model of the quality suite's split: each member single generated (alone) from the
training control cells against its training mean (correlation, norm ratio), and per double
the truth's correlation with the additive baseline, with the sum of the generated singles'
changes, and with the composed double; the composed double against the generated sum.

Usage, from the repository root:
  python benchmarks/archive/doubles_decomposition.py MODEL_DIR
Exploratory code.
"""
import sys, numpy as np, torch, scipy.sparse as sp
sys.path.insert(0, "benchmarks")
from suites.common import norman_doubles_split, predict_cells
import scdit
torch.set_num_threads(1)
tr, te = norman_doubles_split()
model = scdit.load(sys.argv[1])
def M(a): X = a.X; X = X.toarray() if sp.issparse(X) else np.asarray(X); return X.mean(0)
ctrl = tr[tr.obs.perturbation == "control"]
c = M(ctrl)
doubles = sorted(te.obs.perturbation.unique())
singles = sorted({s for d in doubles for s in d.split("+")})
gen = {}
for i, lab in enumerate(singles + doubles):
    p = predict_cells(model, [lab], 500, ctrl, seed=7 + i, quick=False, generator_only=True)
    gen[lab] = M(p) - c
train_d = {s: M(tr[tr.obs.perturbation == s]) - c for s in singles}
def r(a, b): return np.corrcoef(a, b)[0, 1]
print("single fidelity: corr(gen, train), norm ratio")
for s in singles: print(s, round(r(gen[s], train_d[s]), 3), round(np.linalg.norm(gen[s]) / np.linalg.norm(train_d[s]), 3))
print("double: truth corr with  additive(train) | additive(gen singles) | gen composed ; corr(gen composed, add gen)")
res = []
for d in doubles:
    a, b = d.split("+"); truth = M(te[te.obs.perturbation == d]) - c
    at, ag = train_d[a] + train_d[b], gen[a] + gen[b]
    row = [r(truth, at), r(truth, ag), r(truth, gen[d]), r(gen[d], ag), np.linalg.norm(gen[d]) / np.linalg.norm(ag), np.linalg.norm(truth)/np.linalg.norm(at)]
    res.append(row); print(d, np.round(row, 3))
print("mean", np.round(np.mean(res, 0), 3))
