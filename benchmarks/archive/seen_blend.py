"""How far should a seen perturbation's estimate move the generator's own mean? (session 17)

For a saved model of a seen-perturbation quality setting, predicts the held-out conditions with
the default (the estimate sets the mean) and with the generator alone from the same starting
points (inverted control cells for a noise-source model, as the default uses), then scores the
cell-wise blends ``w·default + (1 − w)·generator`` in log1p for w in 0 … 1.

Usage, from the repository root:
  python benchmarks/archive/seen_blend.py SETTING MODEL_DIR
"""
import argparse
import sys

sys.path.insert(0, "benchmarks")
import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from suites.quality import settings  # noqa: E402

import scdit  # noqa: E402

name, path = sys.argv[1], sys.argv[2]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
key, cov = st.condition_key, st.covariate_key
common = dict(control=st.control, train=task.train, covariate_key=cov, seed=0)
noise_source = model.config.flow.source != "control"


def run(**kw):
    cells = []
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j,
                                       verbose=False, representation="log1p", **kw))
    out = ad.concat(cells, merge="same")
    out.obs_names_make_unique()
    return out


A = run()
inv = scdit.SamplingConfig(invert=True) if noise_source else None
G = run(effects="none", sampling=inv)
assert (A.obs[key].to_numpy() == G.obs[key].to_numpy()).all()
frames = []
for w in (0.0, 0.25, 0.5, 0.75, 1.0):
    X = w * np.asarray(A.X.todense() if hasattr(A.X, "todense") else A.X) + \
        (1 - w) * np.asarray(G.X.todense() if hasattr(G.X, "todense") else G.X)
    B = ad.AnnData(X=X.astype(np.float32), obs=A.obs.copy(), var=A.var.copy())
    method = f"w{w:.2f}"
    real = task.real
    df = scdit.evaluate(B, real, key, baselines=() if frames else st.baselines,
                        method_name=method, **common)
    frames.append(df if not frames else df[df["method"] == method])
    print(method, flush=True)
table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance") if c in table.columns]
print(table[cols].round(4).to_string())
