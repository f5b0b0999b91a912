"""Evaluate a saved model of a quality-suite setting with sampling variants (session 14).

Usage, from the repository root: python benchmarks/archive/seen_variants_eval.py SETTING MODEL_DIR
noinv,inv[,noinv_l1p] [--per]
"""
import os, sys, time, argparse
OUT = os.environ.get("OUT", ".")  # where predictions are written
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd
import scdit
from suites.quality import settings, METRICS

name, path = sys.argv[1], sys.argv[2]
variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["noinv", "inv"]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
key, cov = st.condition_key, st.covariate_key
common = dict(control=st.control, train=task.train, covariate_key=cov, seed=0)
frames = []
def run(method, **kw):
    t0 = time.time()
    cells = []
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, **kw))
    out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
    out.write_h5ad(f"{OUT}/pred_{name}_{method}.h5ad")
    df = scdit.evaluate(out, task.real, key, baselines=() if frames else st.baselines, method_name=method, **common)
    frames.append(df if len(frames) == 0 else df[df["method"] == method])
    print(method, round(time.time() - t0, 1), "s", flush=True)
for v in variants:
    inv = v.startswith("inv")
    steps = {}
    if "e1" in v: steps = dict(steps=1, solver="euler")
    S = scdit.SamplingConfig(invert=inv, **steps)
    kw = {"representation": "log1p"} if "l1p" in v else {}
    run(f"{v}_default", sampling=S, **kw)
    if "nogen" not in v:
        run(f"{v}_generator", sampling=S, effects="none", **kw)
table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
cols = [m for m in ("pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1") if m in table.columns]
print(table[cols].round(3).to_string())
full = pd.concat(frames, ignore_index=True)
if "--per" in sys.argv:
    print(full.columns.tolist()); print(full.head())
    piv = full[full.metric == "energy_distance"].pivot_table(index="condition", columns="method", values="value")
    print(piv.round(3).to_string())
