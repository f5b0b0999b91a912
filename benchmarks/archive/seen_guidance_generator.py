"""The generator alone on held-out cells of seen perturbations at guidance scales above 1
(session 19, issue #17): does classifier-free guidance sharpen what the generator learned of
each perturbation? Scored on a saved model of a quality-suite seen setting (noise starts,
``effects="none"``, the suite's source cells and seeds).

Usage, from the repository root:
  python benchmarks/archive/seen_guidance_generator.py SETTING MODEL_DIR 1,1.5,2
Exploratory code (not a maintained suite).
"""
import argparse
import sys
import time

sys.path.insert(0, "benchmarks")
import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from suites.quality import settings  # noqa: E402

import scdit  # noqa: E402

torch.set_num_threads(1)
name, path = sys.argv[1], sys.argv[2]
scales = [float(s) for s in sys.argv[3].split(",")]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
common = dict(control=st.control, train=task.train, covariate_key=st.covariate_key, seed=0)
frames = []
for g in scales:
    t0, cells = time.time(), []
    sampling = scdit.SamplingConfig(guidance_scale=g, invert=False)
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j,
                                       verbose=False, sampling=sampling, effects="none"))
    out = ad.concat(cells, merge="same")
    out.obs_names_make_unique()
    method = f"generator_g{g}"
    df = scdit.evaluate(out, task.real, st.condition_key, method_name=method,
                        baselines=() if frames else ("seen_mean", "mean"), **common)
    frames.append(df if not frames else df[df["method"] == method])
    print(method, round(time.time() - t0), "s", flush=True)
table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
