"""Norman doubles: the generator alone as a per-cell sum of counterfactuals, ``x_A + x_B −
x_control`` (each single predicted with ``invert=True`` from the same source cells), on a saved
model from ``doubles_generator_variants.py`` (session 33, issue #17; worse than composing
velocities).

Usage, from the repository root:
  python benchmarks/archive/doubles_counterfactual_sum.py MODEL_DIR
Exploratory code.
"""
import sys, warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, torch
sys.path.insert(0, "benchmarks")
from suites import quality as Q
import scdit
warnings.simplefilter("ignore")
torch.set_num_threads(1)
setting = Q.settings()["norman_doubles"]
class Opts: kang = None
task = setting.make(setting.holdouts[0], False, Opts)
key = setting.condition_key
model = scdit.load(Path(sys.argv[1]))
parts = task.parts or ((task.source, task.n_cells),)
src, ncell = parts[0]
print("source", src.n_obs, ncell)
S = src.X.toarray() if hasattr(src.X, "toarray") else np.asarray(src.X)
doubles = sorted(ncell)
singles = sorted({m for d in doubles for m in d.split("+")})
inv = scdit.SamplingConfig(invert=True)
cf = {}
for lab in singles + ["control"]:
    p = model.predict(lab, source=src, seed=0, effects="none", sampling=inv, verbose=False)
    cf[lab] = p.X.toarray()
rows = {"arith_inv": [], "arith_inv_ctrlgen": []}
for d in doubles:
    a, b = d.split("+")
    rows["arith_inv"].append(np.maximum(cf[a] + cf[b] - S, 0))
    rows["arith_inv_ctrlgen"].append(np.maximum(cf[a] + cf[b] - cf["control"], 0))
frames = []
for name, mats in rows.items():
    X = np.concatenate(mats)
    obs = pd.DataFrame({key: np.repeat(doubles, len(S))}, index=[f"c{i}" for i in range(len(X))])
    pred = ad.AnnData(X.astype(np.float32), obs=obs, var=pd.DataFrame(index=src.var_names))
    frames.append(scdit.evaluate(pred, task.real, key, control=setting.control, train=task.train, baselines=(), method_name=name, seed=0))
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]].round(4).to_string())
