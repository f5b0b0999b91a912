"""Score the Papalexi unseen-target folds with the session-18 defaults on the models saved by
``unseen_variants.py`` (session 17, fitted at commit 7c48692; issue 17).

Those models predate ``summary["feature_reliability"]``; it is computed here exactly as
``fit`` computes it (the training cells' log1p, the data-derived feature table of the model's
genes, ``scdit.conditions.feature_reliability``) and set on the loaded model, which is what a
fit with today's code stores (the fit itself does not depend on it).

Usage, from the repository root:
  python benchmarks/archive/unseen_guidance.py FOLD [VARIANT,...]
Variants: default, generator (effects="none"), g1 (guidance 1 with the automatic inversion),
noinv (the automatic guidance from noise), old (guidance 1 from noise: the session-17
default).
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
from scdit.conditions import data_features, feature_reliability, feature_table  # noqa: E402
from scdit.data import to_log1p  # noqa: E402

MODELS = os.environ.get("MODELS", "/work/models/unseen/models")
OUT = os.environ.get("OUT", ".")
fold, seed = sys.argv[1], 0
variants = sys.argv[2].split(",") if len(sys.argv) > 2 else ["default", "generator"]
st = settings()["papalexi_unseen"]
task = st.make(fold, False, argparse.Namespace())
model = scdit.load(f"{MODELS}/papalexi_{fold}_s{seed}")
if "feature_reliability" not in model.summary:
    tr = task.train
    X_log = to_log1p(tr.X, model.representation)
    genes = tr.var_names.get_indexer(list(model.tokenizer.genes))
    feats = data_features(X_log, tr.var_names, genes,
                          n_components=model.config.conditions.n_components, seed=seed)
    table, _, _ = feature_table(feats, model.vocab.atoms, source="data", fill_missing=True)
    rel = feature_reliability(X_log, tr.var_names, tr.obs["perturbation"].astype(str),
                              "control", table, model.vocab.atoms, genes=genes)
    model.summary["feature_reliability"] = rel
    model.generator.feature_scale = rel["scale"]
print(fold, "feature reliability", model.summary["feature_reliability"], flush=True)
common = dict(control="control", train=task.train, seed=seed)
frames = []
for v in variants:
    t0 = time.time()
    kw = {"effects": "none"} if v == "generator" else {}
    if v == "g1":
        kw["sampling"] = scdit.SamplingConfig(guidance_scale=1.0)
    if v == "noinv":
        kw["sampling"] = scdit.SamplingConfig(invert=False)
    if v == "old":  # the session-17 default: the plain conditional model from noise
        kw["sampling"] = scdit.SamplingConfig(guidance_scale=1.0, invert=False)
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
full.to_csv(f"{OUT}/unseen_guidance_{fold}_s{seed}.csv", index=False)
table = scdit.evaluate.summarize(full.drop(columns="fold"))
cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1")
        if c in table.columns]
print(table[cols].round(3).to_string())
