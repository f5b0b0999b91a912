"""The generator alone on a saved seen model at other ODE solvers / step counts (log1p output;
session 21, issue #17): is the generator's shortfall against `seen_mean` a sampling error?

Usage, from the repository root:
  python benchmarks/archive/generator_sampling_steps.py glioblastoma_seen MODEL_DIR heun:20,heun:60,euler:200
Exploratory code (not a maintained suite).
"""
import os, sys, time, argparse
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd, numpy as np
import scdit
from suites.quality import settings
name, path = sys.argv[1], sys.argv[2]
variants = sys.argv[3].split(",")
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
key, cov = st.condition_key, st.covariate_key
common = dict(control=st.control, train=task.train, covariate_key=cov, seed=0)
frames = []
for v in variants:
    solver, steps = v.split(":")
    S = scdit.SamplingConfig(steps=int(steps), solver=solver)
    for eff in ("none",):
        t0 = time.time(); cells = []
        for i, (src, n) in enumerate(parts):
            for j, c in enumerate(sorted(n)):
                cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False,
                                           sampling=S, effects=eff, representation="log1p"))
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
        m = f"{solver}{steps}_{eff}"
        df = scdit.evaluate(out, task.real, key, baselines=() if frames else ("seen_mean",), method_name=m, **common)
        frames.append(df if not frames else df[df["method"] == m])
        print(m, round(time.time() - t0, 1), "s", flush=True)
table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance") if c in table.columns]
print(table[cols].round(4).to_string())
