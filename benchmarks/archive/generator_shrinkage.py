"""How far the generator alone's mean change (from the control cells) follows the training mean
change, in direction (correlation) and size (norm ratio), on glioblastoma patient PW030
(session 21, issue #17).

Usage, from the repository root:
  python benchmarks/archive/generator_shrinkage.py MODEL_DIR [MODEL_DIR ...]
Exploratory code (not a maintained suite).
"""
import sys, argparse, numpy as np, torch
sys.path.insert(0, "benchmarks")
import scdit
from suites.quality import settings
torch.set_num_threads(1)
st = settings()["glioblastoma_seen"]
task = st.make(st.holdouts[0], False, argparse.Namespace())
src, n = task.parts[0]
real = task.real
pat = src.obs["patient_id"].iloc[0]
def l1p(a):
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    X = X / X.sum(1, keepdims=True) * 1e4
    return np.log1p(X)
r = real[(real.obs["patient_id"] == pat) & (real.obs["condition"] != "ctrl")]
R = l1p(r)
tr = task.train[(task.train.obs["patient_id"] == pat) & (task.train.obs["condition"] != "ctrl")]
T = l1p(tr)
C = l1p(src)
print(pat, "real test", R.shape, "train", T.shape)
for p in sys.argv[1:]:
    m = scdit.load(p)
    c = [k for k in n if k != "ctrl"][0]
    for eff in ("none", "auto"):
        g = m.predict(c, n_cells=n[c], source=src, seed=0, verbose=False, effects=eff, representation="log1p")
        G = g.X.toarray() if hasattr(g.X, "toarray") else np.asarray(g.X)
        d = lambda A: A.mean(0) - C.mean(0)
        print(p.split("/")[-1], eff, "mean sd ratio gen/real %.3f" % (G.std(0).mean() / R.std(0).mean()),
              "corr(dgen, dtrain) %.4f corr(dgen,dtest) %.4f corr(dtrain,dtest) %.4f" % (
              np.corrcoef(d(G), d(T))[0, 1], np.corrcoef(d(G), d(R))[0, 1], np.corrcoef(d(T), d(R))[0, 1]),
              "|dgen|/|dtrain| %.3f" % (np.linalg.norm(d(G)) / np.linalg.norm(d(T))),
              "dist to nearest source", float(np.median(np.min(((G[:200, None] - C[None]) ** 2).sum(-1), 1))))
