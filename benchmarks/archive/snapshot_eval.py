"""Generator alone (EFFS=none, default) and/or the default (EFFS=auto) of saved models of a seen
quality-suite setting, the suite's source cells and seeds (session 23, issue #17).

Usage, from the repository root:
  EFFS=none,auto python benchmarks/archive/snapshot_eval.py SETTING MODEL_DIR [MODEL_DIR ...]
SAMP='{"precision": "fp32"}' sets SamplingConfig fields. Exploratory code.
"""
import sys, time, argparse, os
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd, torch
torch.set_num_threads(1)
import scdit
from suites.quality import settings
name, dirs = sys.argv[1], sys.argv[2:]
effs = os.environ.get("EFFS", "none").split(",")
SAMP = eval(os.environ.get("SAMP", "None"))
SAMP = scdit.SamplingConfig(**SAMP) if SAMP else None
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
parts = task.parts or ((task.source, task.n_cells),)
common = dict(control=st.control, train=task.train, covariate_key=st.covariate_key, seed=0)
rows = []
base = None
for path in dirs:
    model = scdit.load(path)
    for eff in effs:
        t0 = time.time(); cells = []
        for i, (src, n) in enumerate(parts):
            for j, c in enumerate(sorted(n)):
                cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, effects=eff, sampling=SAMP))
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
        df = scdit.evaluate(out, task.real, st.condition_key, baselines=() if base is not None else ("seen_mean",), method_name="m", **common)
        t = scdit.evaluate.summarize(df)
        if base is None:
            base = t.loc["seen_mean"] if "seen_mean" in t.index else None
            print("seen_mean", base[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).tolist())
        r = t.loc["m"]
        print(path, eff, r[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).tolist(), round(time.time()-t0), "s", flush=True)
