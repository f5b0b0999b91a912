"""Seen perturbations predicted *without* ``source`` (session 19, issue #17).

Since session 19 a seen perturbation whose training mean sets its mean keeps its own stored
cells as reference cells and starts from distinct stored control cells of their contexts,
inverted (``SamplingConfig.invert=None``); before, it started from noise. Scored on a saved
model of a quality-suite seen setting (``seen_variants_fit.py``), with the suite's cell numbers
and seeds, against the suite's real cells (``suite:``: its control cells are the suite's
source cells) and against the held-out cells with the model's stored control cells as the
controls (``stored:``).

Usage, from the repository root:
  python benchmarks/archive/seen_nosource.py SETTING MODEL_DIR [VARIANT,...]
Variants: source (the default from the suite's source cells), nosource (the default without
source), noise (without source, ``invert=False``: the behaviour before session 19),
generator (without source, ``effects="none"``).
Exploratory code (not a maintained suite).
"""
import argparse
import os
import sys

sys.path.insert(0, "benchmarks")
import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from suites.quality import settings  # noqa: E402

import scdit  # noqa: E402

torch.set_num_threads(1)
name, path = sys.argv[1], sys.argv[2]
variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["source", "nosource", "noise"]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
key = st.condition_key
parts = task.parts or ((task.source, task.n_cells),)
common = dict(control=st.control, train=task.train, covariate_key=st.covariate_key, seed=0)
ref = model.cells.reference
stored = ref[ref.obs[key] == st.control].copy()
held = task.real[task.real.obs[key] != st.control]
real_stored = ad.concat([held, stored], merge="same")
real_stored.obs_names_make_unique()
frames = []
for v in variants:
    kw = {"effects": "none"} if v == "generator" else {}
    if v == "noise":
        kw["sampling"] = scdit.SamplingConfig(invert=False)
    cells = []
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src if v == "source" else None,
                                       seed=1000 * i + j, verbose=False, **kw))
    out = ad.concat(cells, merge="same")
    out.obs_names_make_unique()
    print(v, "inverted", sorted(set().union(*(c.uns["scdit"]["inverted"] for c in cells))),
          flush=True)
    for where, real in (("suite", task.real), ("stored", real_stored)):
        df = scdit.evaluate(out, real, key, method_name=v,
                            baselines=("seen_mean",) if v == variants[0] else (), **common)
        df["method"] = where + ":" + df["method"]
        frames.append(df)
full = pd.concat(frames, ignore_index=True)
full.to_csv(f"{os.environ.get('OUT', '.')}/seen_nosource_{name}.csv", index=False)
table = scdit.evaluate.summarize(full)
print(table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
