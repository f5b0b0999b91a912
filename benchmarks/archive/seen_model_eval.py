"""Default and generator alone of a saved model of a quality-suite seen setting, counts (the
model's own output) and/or log1p output, the suite's source cells and seeds (session 21, issue #17).

Usage, from the repository root:
  python benchmarks/archive/seen_model_eval.py SETTING MODEL_DIR default,log1p
Models from `seen_variants_fit.py` (e.g. `"{'max_steps': 4800}"`). Exploratory code.
"""
import sys, time, argparse
sys.path.insert(0, "benchmarks")
import anndata as ad, pandas as pd, torch
import scdit
from suites.quality import settings
torch.set_num_threads(1)
name, path = sys.argv[1], sys.argv[2]
reps = sys.argv[3].split(",") if len(sys.argv) > 3 else ["default"]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
common = dict(control=st.control, train=task.train, covariate_key=st.covariate_key, seed=0)
frames = []
for rep in reps:
    for eff in ("auto", "none"):
        kw = {} if rep == "default" else {"representation": rep}
        t0 = time.time(); cells = []
        for i, (src, n) in enumerate(parts):
            for j, c in enumerate(sorted(n)):
                cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, effects=eff, **kw))
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
        m = f"{rep}_{'default' if eff == 'auto' else 'generator'}"
        df = scdit.evaluate(out, task.real, st.condition_key, baselines=() if frames else ("seen_mean",), method_name=m, **common)
        frames.append(df if not frames else df[df["method"] == m])
        print(m, round(time.time() - t0, 1), "s", flush=True)
table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance") if c in table.columns]
print(table[cols].round(4).to_string())
