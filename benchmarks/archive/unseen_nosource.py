"""Unseen Papalexi targets predicted *without* ``source`` (session 19, issue 17).

``predict("JAK2")`` with no source cells: since session 19 the reference cells of a label
known only through its features are stored control cells drawn without replacement (where
enough are stored) and, with ``SamplingConfig.invert=None``, inverted (each cell the
counterfactual of a stored control cell), as with given source cells. Scored on the models
saved by ``unseen_variants.py`` (session 17, fitted at commit 7c48692), with the feature
reliability computed as ``fit`` computes it (see ``unseen_guidance.py``).

Usage, from the repository root:
  python benchmarks/archive/unseen_nosource.py FOLD [VARIANT,...]
Variants: source (the default with the suite's source cells), nosource (the default without
source), nosource_noise (without source, ``invert=False``: noise starts, the session-18
behaviour up to the reference draw), nosource_generator (without source, effects="none"). A third argument ``stored`` adds
the evaluation paired with the baselines: every stored control cell predicted once, and the
same cells as the evaluation's control cells (the baselines' rows are then ``stored_*``).
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
variants = sys.argv[2].split(",") if len(sys.argv) > 2 else ["source", "nosource"]
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
print(fold, "cells per target", dict(task.n_cells), "source", task.source.n_obs, flush=True)
frames = []
for v in variants:
    t0 = time.time()
    kw = {"effects": "none"} if v.endswith("generator") else {}
    if v.endswith("noise"):
        kw["sampling"] = scdit.SamplingConfig(invert=False)
    src = task.source if v == "source" else None
    cells = [model.predict(c, n_cells=n, source=src, seed=seed + i, verbose=False, **kw)
             for i, (c, n) in enumerate(sorted(task.n_cells.items()))]
    print(v, "inverted", cells[0].uns["scdit"].get("inverted"), flush=True)
    out = ad.concat(cells, merge="same")
    out.obs_names_make_unique()
    df = scdit.evaluate(out, task.real, "perturbation", baselines=() if frames else st.baselines,
                        method_name=v, **common)
    frames.append(df if not frames else df[df["method"] == v])
    print(v, round(time.time() - t0, 1), "s", flush=True)
if "stored" in sys.argv[3:]:
    # paired with the baselines: every stored control cell as a reference (n = all of them,
    # drawn without replacement: each once) and the same cells as the evaluation's controls
    ref = model.cells.reference
    stored = ref[ref.obs["perturbation"] == "control"].copy()
    real = ad.concat([task.real[task.real.obs["perturbation"] != "control"], stored],
                     merge="same")
    real.obs_names_make_unique()
    for v in ("stored", "stored_generator", "stored_noise"):
        kw = {"effects": "none"} if v.endswith("generator") else {}
        if v.endswith("noise"):  # noise starts: the session-18 behaviour without source
            kw["sampling"] = scdit.SamplingConfig(invert=False)
        cells = [model.predict(c, n_cells=stored.n_obs, seed=seed + i, verbose=False, **kw)
                 for i, c in enumerate(sorted(task.n_cells))]
        print(v, "inverted", cells[0].uns["scdit"].get("inverted"), flush=True)
        out = ad.concat(cells, merge="same")
        out.obs_names_make_unique()
        df = scdit.evaluate(out, real, "perturbation", baselines=st.baselines if v == "stored"
                            else (), method_name=v, **common)
        df.loc[df["method"] != v, "method"] = "stored_" + df.loc[df["method"] != v, "method"]
        frames.append(df)
full = pd.concat(frames, ignore_index=True)
full.insert(0, "fold", fold)
full.to_csv(f"{OUT}/unseen_nosource_{fold}_s{seed}.csv", index=False)
table = scdit.evaluate.summarize(full.drop(columns="fold"))
cols = [c for c in ("pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1")
        if c in table.columns]
print(table[cols].round(3).to_string())
