"""Classifier-free guidance scale of the generator alone scored against the TRAINING cells of a
quality-suite seen setting (no test cells), to see which scale a fit-time calibration would pick
(session 21, issue #17). Test-side scores: `seen_guidance_generator.py`.

Usage, from the repository root:
  python benchmarks/archive/seen_guidance_train.py SETTING MODEL_DIR 1,1.15,1.3,1.5
Exploratory code (not a maintained suite).
"""
import sys, argparse, time
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd, torch
import scdit
from suites.quality import settings
torch.set_num_threads(1)
name, path = sys.argv[1], sys.argv[2]
scales = [float(s) for s in sys.argv[3].split(",")]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
train = task.train
common = dict(control=st.control, train=train, covariate_key=st.covariate_key, seed=0)
frames = []
for g in scales:
    cells = []
    S = scdit.SamplingConfig(guidance_scale=g, invert=False)
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j + 7, verbose=False, sampling=S, effects="none"))
    out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
    m = f"g{g}"
    df = scdit.evaluate(out, train, st.condition_key, baselines=(), method_name=m, **common)
    frames.append(df)
    print(m, flush=True)
table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
