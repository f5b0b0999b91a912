"""Stand-in cells built without a model: the typical training perturbation's mean imposed on
the quality suite's source control cells by a plain shift clipped at 0, by the clipped-mean
shift (scdit's stand-in until session 33) or by one factor per gene on expm1 (session 33,
issue #17). Scored in log1p (counts data normalised first) beside the ``mean`` baseline.

Usage, from the repository root:
  python benchmarks/archive/standin_scaling.py norman_unseen
  python benchmarks/archive/standin_scaling.py papalexi_unseen all9
Exploratory code.
"""
import sys
import numpy as np, pandas as pd, anndata as ad, torch
sys.path.insert(0, "benchmarks")
from suites import quality as Q
import scdit
from scdit.data import clipped_mean_shift
torch.set_num_threads(1)
name = sys.argv[1] if len(sys.argv) > 1 else "norman_unseen"
hold = sys.argv[2] if len(sys.argv) > 2 else ""
setting = Q.settings()[name]
class Opts: kang = None
task = setting.make(hold, False, Opts)
key, ctrl = setting.condition_key, setting.control
train, real = task.train, task.real
parts = task.parts or ((task.source, task.n_cells),)
src, ncell = parts[0]
def dense(X): return np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float64)
counts = "counts" in str(train.uns.get("representation", "")) or float(dense(train.X[:50]).max()) > 30
print("counts?", counts, src.n_obs, ncell)
def tolog(X):
    if not counts: return X
    return np.log1p(X / X.sum(1, keepdims=True) * 1e4)
Xt = tolog(dense(train.X)); lab = train.obs[key].astype(str).to_numpy()
perts = sorted(set(lab) - {ctrl})
typ = np.mean([Xt[lab == p].mean(0) for p in perts], 0)
ctl_mean = Xt[lab == ctrl].mean(0)
S = tolog(dense(src.X))
eff = typ - ctl_mean
def mult(S, target):
    E = np.expm1(S); out = S.copy()
    for g in range(S.shape[1]):
        if E[:, g].sum() <= 0 or target[g] <= 0:
            continue
        lo, hi = 1e-4, 1e4
        for _ in range(60):
            r = np.sqrt(lo * hi)
            if np.log1p(r * E[:, g]).mean() < target[g]: lo = r
            else: hi = r
        out[:, g] = np.log1p(np.sqrt(lo * hi) * E[:, g])
    # genes with no signal: clipped shift
    bad = (E.sum(0) <= 0)
    if bad.any():
        out[:, bad] = np.maximum(S[:, bad] + clipped_mean_shift(S[:, bad], target[bad]), 0)
    return out
target = S.mean(0) + eff
variants = {
    "plain_clip": np.maximum(S + eff, 0),
    "matched_clip": np.maximum(S + clipped_mean_shift(S, target), 0),
    "multiplicative": mult(S, target),
}
label = sorted(ncell)[0]
rows = []
for nm, X in variants.items():
    k = ncell[label]
    idx = np.resize(np.arange(len(X)), k)
    a = ad.AnnData(X[idx].astype(np.float32), obs=pd.DataFrame({key: [label] * k}, index=[f"c{i}" for i in range(k)]), var=pd.DataFrame(index=src.var_names))
    realX = real.copy()
    if counts:
        realX = ad.AnnData(tolog(dense(real.X)).astype(np.float32), obs=real.obs, var=real.var)
        tr = ad.AnnData(Xt.astype(np.float32), obs=train.obs, var=train.var)
    else:
        tr = train
    t = scdit.evaluate(a, realX, key, control=ctrl, train=tr, baselines=("mean",) if nm == "plain_clip" else (), method_name=nm, seed=0)
    rows.append(scdit.evaluate.summarize(t))
    print(nm, X.min(), flush=True)
print(pd.concat(rows)[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
