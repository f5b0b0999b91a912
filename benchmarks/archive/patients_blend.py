"""Diagnostic: held-out contexts, blend the generator's mean with the context estimate."""
import sys, argparse
from pathlib import Path
import numpy as np, pandas as pd, anndata as ad, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import scdit
from suites import quality as Q
from suites.common import fit_model, predict_cells

p = argparse.ArgumentParser()
p.add_argument("setting"); p.add_argument("holdouts", nargs="+"); p.add_argument("--kang")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(1)
S = Q.settings()[a.setting]
rows = []
for h in a.holdouts:
    task = S.make(h, False, a)
    key, cov = S.condition_key, S.covariate_key
    mp = Path(f"models/{a.setting}_{h}_{a.seed}")
    if mp.exists():
        model = scdit.load(mp)
    else:
        model = fit_model(task.train, key, control=S.control, seed=a.seed, quick=False,
                          covariate_keys=(cov,))
        model.save(mp)
    (src, n), = (task.parts or ((task.source, task.n_cells),))
    conds = sorted(n)
    rep = "log1p"
    gen = predict_cells(model, conds, n, src, seed=a.seed, quick=False, generator_only=True, representation=rep)
    dfl = predict_cells(model, conds, n, src, seed=a.seed, quick=False, representation=rep)
    preds = {"default_log1p": dfl, "gen_log1p": gen}
    for w in (0.25, 0.5, 0.75):
        X = np.asarray(dfl.X.todense() if hasattr(dfl.X, "todense") else dfl.X, dtype=np.float64).copy()
        G = np.asarray(gen.X.todense() if hasattr(gen.X, "todense") else gen.X, dtype=np.float64)
        for c in conds:
            r = (dfl.obs[key] == c).to_numpy(); rg = (gen.obs[key] == c).to_numpy()
            X[r] += w * (G[rg].mean(0) - X[r].mean(0))
        b = dfl.copy(); b.X = np.clip(X, 0, None).astype(np.float32)
        preds[f"blend{w}"] = b
    common = dict(control=S.control, train=task.train, covariate_key=cov, seed=a.seed)
    frames = []
    first = True
    for m, cells in preds.items():
        df = scdit.evaluate(cells, task.real, key, baselines=S.baselines if first else (), method_name=m, **common)
        first = False
        frames.append(df)
    t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
    cols = [c for c in ("pearson_delta", "pearson_delta_top20", "energy_distance") if c in t.columns]
    t = t[cols]; t["holdout"] = h
    print(t.round(3).to_string(), flush=True)
    rows.append(t.reset_index())
pd.concat(rows).to_csv(f"blend_{a.setting}_{a.seed}.csv", index=False)
