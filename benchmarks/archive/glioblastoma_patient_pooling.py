"""Glioblastoma seen patients: would pooling a patient's panobinostat effect towards the other
patients' help (session 19, issue #17)? No model: each patient's training effect (log1p), raw
or empirical-Bayes shrunk towards the mean over the five patients per gene (prior variance
by moments: the between-patient variance minus the mean squared standard error; optionally
limited to 0.5 standard errors from the raw effect), added to the patient's training control
cells and clipped at 0, scored against the held-out cells of the quality suite's
``glioblastoma_seen`` split beside ``evaluate``'s own ``seen_mean`` row (an unclipped mean).

Usage, from the repository root: python benchmarks/archive/glioblastoma_patient_pooling.py
Exploratory code (not a maintained suite).
"""
import anndata as ad
import numpy as np
import pandas as pd

import scdit
from scdit.data import to_log1p
from scdit.splits import random_cells

a = scdit.datasets.glioblastoma_panobinostat()
split = random_cells(a, "condition", fraction=0.2, stratify_key="patient_id", control="ctrl",
                     seed=0)
train, test = split.subset(a)
X = np.asarray(to_log1p(train.X).toarray())
obs = train.obs
patients = sorted(obs["patient_id"].unique())
ctrl_of = {p: X[(obs["patient_id"] == p).to_numpy() & (obs["condition"] == "ctrl").to_numpy()]
           for p in patients}
effects, se2 = [], []
for p in patients:
    c = ctrl_of[p]
    t = X[(obs["patient_id"] == p).to_numpy() & (obs["condition"] != "ctrl").to_numpy()]
    effects.append(t.mean(0) - c.mean(0))
    se2.append(t.var(0, ddof=1) / len(t) + c.var(0, ddof=1) / len(c))
D, S2 = np.array(effects), np.array(se2)
centre = D.mean(0)
tau2 = np.clip(D.var(0, ddof=1) - S2.mean(0), 0, None)
variants = {"raw": [], "pooled": [], "pooled_limited": []}
for i in range(len(patients)):
    w = tau2 / (tau2 + S2[i])
    pooled = centre + w * (D[i] - centre)
    variants["raw"].append(D[i])
    variants["pooled"].append(pooled)
    se = np.sqrt(S2[i])
    variants["pooled_limited"].append(np.clip(pooled, D[i] - 0.5 * se, D[i] + 0.5 * se))
print("median shrinkage weight", float(np.median(w)))
real = ad.concat([test, train[train.obs["condition"] == "ctrl"]], merge="same")
real.obs_names_make_unique()
label = str(test.obs["condition"][test.obs["condition"] != "ctrl"].iloc[0])
frames = []
for name, shifts in variants.items():
    blocks, parts = [], []
    for p, d in zip(patients, shifts, strict=True):
        blocks.append(np.maximum(ctrl_of[p] + d, 0))
        parts.append(pd.DataFrame({"condition": label, "patient_id": p},
                                  index=range(len(ctrl_of[p]))))
    ob = pd.concat(parts, ignore_index=True)
    ob.index = ob.index.astype(str)
    pred = ad.AnnData(np.vstack(blocks).astype(np.float32), obs=ob,
                      var=pd.DataFrame(index=a.var_names))
    df = scdit.evaluate(pred, real, "condition", control="ctrl", train=train,
                        covariate_key="patient_id", method_name=name,
                        baselines=() if frames else ("seen_mean",))
    frames.append(df)
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
