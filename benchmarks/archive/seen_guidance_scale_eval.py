"""Score a saved model of a quality-suite setting at fixed guidance scales, with or without the
effect estimates (`auto` = default, `none` = generator alone), the suite's source cells and seeds
(session 21, issue #17).

Usage, from the repository root:
  python benchmarks/archive/seen_guidance_scale_eval.py SETTING MODEL_DIR auto|none 1,1.25
Exploratory code (not a maintained suite).
"""
import sys, argparse
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd, torch, scdit
from suites.quality import settings
torch.set_num_threads(1)
name, path, eff = sys.argv[1], sys.argv[2], sys.argv[3]
scales = [float(s) for s in sys.argv[4].split(",")]
st = settings()[name]; task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
frames = []
for g in scales:
    cells = []
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, effects=eff, sampling=scdit.SamplingConfig(guidance_scale=g)))
    out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
    df = scdit.evaluate(out, task.real, st.condition_key, baselines=(), method_name=f"{eff}_g{g}", control=st.control, train=task.train, covariate_key=st.covariate_key, seed=0)
    frames.append(df); print(g, flush=True)
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
