"""Held-out glioblastoma patients: selection rules for the held-out-context estimator, no model
(session 27, issue #17). RULE=max (current: best mean leave-one-context-out Pearson), 1se
(beat the mean shift by one standard error), allwin (beat it on every left-out context), worst
(best worst-case). Usage: RULE=1se python benchmarks/archive/context_selection_rules.py glioblastoma_patients
Prints the `context_estimate` and `context_shift` baselines (Pearson Δ / energy) per held-out unit."""
import sys, argparse, os, warnings
sys.path.insert(0, "benchmarks")
warnings.simplefilter("ignore")
import numpy as np, pandas as pd
import scdit
import scdit.effects._context as CX
from suites.quality import settings

RULE = os.environ.get("RULE", "max")
_orig_scores = CX.loco_scores

def per_context(E, C, P):
    K = len(E); out = {}
    for kind, param in CX.candidates():
        s = []
        for k in range(K):
            rest = np.arange(K) != k
            est = CX._estimate(kind, param, E[rest], C[rest], P[rest], C[k], P[k])
            s.append(CX._pearson(est, E[k]))
        out[(kind, param)] = np.array(s)
    return out

def patched(E, C, P):
    pc = per_context(E, C, P)
    base = pc[("mean", None)]
    out = {}
    for key, s in pc.items():
        d = s - base
        if RULE == "max":
            out[key] = float(s.mean())
        elif RULE == "1se":
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
            out[key] = float(s.mean()) if (key == ("mean", None) or d.mean() > se) else -np.inf
        elif RULE == "allwin":
            out[key] = float(s.mean()) if (key == ("mean", None) or (d > 0).all()) else -np.inf
        elif RULE == "worst":  # maximise the worst context's score
            out[key] = float(s.min())
    return out
CX.loco_scores = patched

which = sys.argv[1]
st = settings()[which]
holdouts = st.holdouts
opts = argparse.Namespace(kang="/work/scratch/s27/valid.h5ad")
rows = []
for h in holdouts:
    task = st.make(h, False, opts)
    df = scdit.evaluate(task.real, task.real, st.condition_key, baselines=("context_estimate", "context_shift"),
                        control=st.control, train=task.train, covariate_key=st.covariate_key, method_name="real")
    df = df[df.method.isin(["context_estimate", "context_shift"]) & df.metric.isin(["pearson_delta", "energy_distance"])]
    g = df.groupby(["method", "metric"]).value.mean().unstack()
    print(RULE, h, "est %.3f / %.2f" % tuple(g.loc["context_estimate", ["pearson_delta", "energy_distance"]]),
          "shift %.3f / %.2f" % tuple(g.loc["context_shift", ["pearson_delta", "energy_distance"]]), flush=True)
