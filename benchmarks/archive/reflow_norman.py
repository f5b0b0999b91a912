"""A saved fitted model vs its reflows on the Norman doubles demo split (session 12, #18).

Usage: ``python reflow_norman.py MODEL_DIR PAIRSxSTEPS ...`` (e.g. ``16384x1500 8192x800``):
scores the fitted model at Heun x 20 and Euler 1/2/4, then each reflow at Euler 1/2/4, with
``effects="auto"`` and ``"none"``; writes the rows to /tmp/prof/reflow_eval.json
(archived as reflow_norman_2026-12-02.json). The model: ``scdit.fit`` of the demo split's
training cells with defaults, seed 0.
"""
import time, sys, warnings, json
warnings.filterwarnings("ignore")
import numpy as np, anndata as ad, torch
import scdit
from scdit.demo import load_data
adata, split, train, test = load_data()
m = scdit.load(sys.argv[1])
variants = [tuple(map(int, v.split("x"))) for v in sys.argv[2:]]  # pairs x steps
src = train[train.obs["perturbation"] == "control"].copy()
real = ad.concat([test, src], merge="same")
held = sorted(test.obs["perturbation"].unique())
def score(mod, st, solver, eff):
    t0 = time.perf_counter()
    parts = [mod.predict(c, n_cells=500, source=src, seed=i, effects=eff, verbose=False,
                         sampling=scdit.SamplingConfig(steps=st, solver=solver)) for i, c in enumerate(held)]
    dt = time.perf_counter() - t0
    pred = ad.concat(parts); pred.obs_names_make_unique()
    s = scdit.evaluate.summarize(scdit.evaluate(pred, real, "perturbation", control="control", train=train, baselines=()))
    row = s.loc["scdit"]
    return {"cells_per_s": round(len(held) * 500 / dt, 1), **{k: round(float(row[k]), 4) for k in ("pearson_delta", "pearson_delta_de", "energy_distance")}}
rows = []
for eff in ("auto", "none"):
    rows.append(("teacher", "heun20", eff, score(m, None, None, eff))); print(rows[-1], flush=True)
    for st in (1, 2, 4):
        rows.append(("teacher", f"euler{st}", eff, score(m, st, "euler", eff))); print(rows[-1], flush=True)
for pairs, steps in variants:
    t0 = time.perf_counter()
    r = scdit.reflow(m, n_pairs=pairs, max_steps=steps, verbose=False)
    info = r.summary["reflow"]
    print(f"reflow {pairs}x{steps}: {time.perf_counter() - t0:.0f} s (pairs {info['pair_seconds']} s), val {info['best_val_loss']:.4f}", flush=True)
    for eff in ("auto", "none"):
        for st in (1, 2, 4):
            rows.append((f"reflow{pairs}x{steps}", f"euler{st}", eff, score(r, st, "euler", eff))); print(rows[-1], flush=True)
json.dump(rows, open("/tmp/prof/reflow_eval.json", "w"), indent=1)
