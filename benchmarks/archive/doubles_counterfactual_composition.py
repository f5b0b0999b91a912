"""Norman doubles: composing a double from its generated members cell by cell (session 35, issue #17).

For a saved default fit of the quality suite's split (e.g. one of ``noise_pairing_doubles.py``),
every single, the control label and each held-out double are predicted with the generator alone
(``effects="none"``) from the suite's source cells with one seed; with ``shared`` the label is
taken out of the noise seed (a patch of ``LabelSeeds``) so that every label starts from the same
Gaussian draws. ``cf``: each double's cells are ``x_A + x_B - x_control`` of the same draws,
clipped at 0 (counterfactual composition); ``vel``: the default velocity composition; plus the
additive baseline. Writes ``cf_MODE_sSEED.csv`` to the working directory.

Usage, from the repository root:
  python benchmarks/archive/doubles_counterfactual_composition.py MODEL_DIR SEED [shared]
Exploratory code.
"""
import sys
sys.path.insert(0, "benchmarks")
import numpy as np, pandas as pd, anndata as ad, torch, scipy.sparse as sp
torch.set_num_threads(1)
from scdit.model import _seeds
import scdit
from suites import quality as Q
mode = sys.argv[3] if len(sys.argv) > 3 else "shared"
if mode == "shared":
    _init = _seeds.LabelSeeds.__init__
    def init(self, seed, label): _init(self, seed, "same")
    _seeds.LabelSeeds.__init__ = init
setting = Q.settings()["norman_doubles"]
class Opts: kang = None
task = setting.make(setting.holdouts[0], False, Opts)
key = "perturbation"
model = scdit.load(sys.argv[1]); seed = int(sys.argv[2])
n = task.n_cells if isinstance(task.n_cells, int) else 500
src = task.source
doubles = sorted(task.real.obs[key].unique()); doubles = [d for d in doubles if d != "control"]
singles = sorted({s for d in doubles for s in d.split("+")})
def pred(lab, **kw):
    return model.predict(lab, n_cells=n, source=src, seed=seed, effects="none", verbose=False, **kw)
def X(a): x = a.X; return x.toarray() if sp.issparse(x) else np.asarray(x)
cache = {lab: pred(lab) for lab in singles + ["control"]}
xc = X(cache["control"])
outs = {"cf": [], "vel": []}
for d in doubles:
    a, b = d.split("+")
    xa, xb = X(cache[a]), X(cache[b])
    v = pred(d)
    for name, x in (("cf", np.clip(xa + xb - xc, 0, None)), ("vel", X(v))):
        o = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame({key: d}, index=[f"{d}_{i}" for i in range(n)]), var=v.var)
        outs[name].append(o)
frames = []
for name, parts in outs.items():
    p = ad.concat(parts, merge="same")
    frames.append(scdit.evaluate(p, task.real, key, control="control", train=task.train, baselines=() if name != "vel" else ("additive",), method_name=name, seed=seed))
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]].round(4).to_string(), flush=True)
t.to_csv(f"cf_{mode}_s{seed}.csv")
