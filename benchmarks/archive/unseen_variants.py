"""Fit the Papalexi unseen-target folds with fit's defaults, save each model, and score the
default, the generator alone and inverted sampling on the saved model (session 17, issue 17).

Usage, from the repository root:
  python benchmarks/archive/unseen_variants.py fit FOLD SEED        # saves $OUT/models/FOLD_sSEED
  python benchmarks/archive/unseen_variants.py eval FOLD SEED [VARIANT,...]
Variants: default, generator, inv_default, inv_generator (invert=True: each cell the
counterfactual of its control cell).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, "benchmarks")
import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
from suites.quality import settings  # noqa: E402

import scdit  # noqa: E402

OUT = os.environ.get("OUT", ".")
cmd, fold, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
st = settings()["papalexi_unseen"]
task = st.make(fold, False, argparse.Namespace())
path = f"{OUT}/models/papalexi_{fold}_s{seed}"
if cmd == "fit":
    t0 = time.time()
    m = scdit.fit(task.train, "perturbation", control="control", seed=seed, verbose=False)
    print("fit", round(time.time() - t0), "s", m.summary.get("steps"), "steps", flush=True)
    m.save(path)
    sys.exit(0)
model = scdit.load(path)
variants = sys.argv[4].split(",") if len(sys.argv) > 4 else [
    "default", "generator", "inv_default", "inv_generator"]
common = dict(control="control", train=task.train, seed=seed)
frames = []
for v in variants:
    t0 = time.time()
    kw = {"effects": "none"} if v.endswith("generator") else {}
    if v.startswith("inv"):
        kw["sampling"] = scdit.SamplingConfig(invert=True)
    cells = [model.predict(c, n_cells=n, source=task.source, seed=seed + i, verbose=False, **kw)
             for i, (c, n) in enumerate(sorted(task.n_cells.items()))]
    out = ad.concat(cells, merge="same")
    out.obs_names_make_unique()
    df = scdit.evaluate(out, task.real, "perturbation", baselines=() if frames else st.baselines,
                        method_name=v, **common)
    frames.append(df if not frames else df[df["method"] == v])
    print(v, round(time.time() - t0, 1), "s", flush=True)
full = pd.concat(frames, ignore_index=True)
full.insert(0, "fold", fold)
full.to_csv(f"{OUT}/unseen_{fold}_s{seed}.csv", index=False)
table = scdit.evaluate.summarize(full.drop(columns="fold"))
cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1")
        if c in table.columns]
print(table[cols].round(3).to_string())
