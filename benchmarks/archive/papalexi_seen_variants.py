"""Papalexi seen perturbations (20% cells held out): fit variants, default vs generator vs baselines."""
import json, sys, time, warnings
import anndata as ad
import numpy as np
import pandas as pd
warnings.filterwarnings("ignore", category=FutureWarning)
import scdit
from scdit.splits import random_cells

tag, kw = sys.argv[1], json.loads(sys.argv[2])
seed = int(kw.pop("seed", 0))
a = scdit.datasets.papalexi21_thp1()
a.obs["perturbation"] = a.obs["perturbation"].astype(str)
split = random_cells(a, "perturbation", fraction=0.2, control="control", seed=0)
train, test = split.subset(a)
ctrl = train[train.obs["perturbation"] == "control"].copy()
conds = sorted(set(test.obs["perturbation"]) - {"control"})
n = test.obs["perturbation"].value_counts()
t0 = time.perf_counter()
model = scdit.fit(train, "perturbation", control="control", seed=seed, verbose=False, **kw)
fit_s = time.perf_counter() - t0
print(tag, "fit", round(fit_s), "s", model.summary.get("steps"), flush=True)
model.save(f"models/{tag}")
real = ad.concat([test, ctrl], merge="same"); real.obs_names_make_unique()
frames = []
for eff, name in (("auto", "scdit"), ("always", "scdit_always"), ("none", "scdit_generator")):
    cells = ad.concat([model.predict(c, int(n[c]), source=ctrl, seed=seed + i, effects=eff)
                       for i, c in enumerate(conds)])
    bl = ("no_change", "mean", "seen_mean") if eff == "auto" else ()
    df = scdit.evaluate(cells, real, "perturbation", control="control", train=train,
                        baselines=bl, method_name=name, seed=seed)
    frames.append(df if eff == "auto" else df[df["method"] == name])
t = scdit.evaluate.summarize(pd.concat(frames))
cols = ["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]
t = t[cols]
print(tag, f"fit_s={fit_s:.0f}", kw)
print(t.round(3).to_string(), flush=True)
t.insert(0, "tag", tag); t["fit_s"] = fit_s; t["steps"] = model.summary.get("steps")
t.to_csv(f"seen_{tag}.csv")
