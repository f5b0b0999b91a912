"""Glioblastoma seen: the default fit, or one with other DiT sizes, scored on the quality suite's
split as default and generator alone (session 35, issue #17).

Fits ``scdit.fit`` with the suite's keys (``DiT JSON``: fields of ``scdit.DiTConfig``, e.g.
``'{"hidden_size": 128, "depth": 4, "num_heads": 4, "max_tokens": 8}'``; none: the default
preset; ``{}`` too) and saves it to MODEL_DIR, or loads MODEL_DIR; predicts like the suite and writes
``glio_diag_NAME.csv`` beside MODEL_DIR.

Usage, from the repository root:
  python benchmarks/archive/seen_glioblastoma_variants.py MODEL_DIR SEED [DiT JSON] [GUIDANCE JSON]
(e.g. ``'{}' '[1.15, 1.3]'``: the default preset, plus the generator alone at those guidance
scales)
Exploratory code.
"""
import sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
import json
import pandas as pd, anndata as ad, torch
torch.set_num_threads(1)
import scdit
from suites import quality as Q
from suites.common import predict_cells
setting = Q.settings()["glioblastoma_seen"]
class Opts: kang = None
task = setting.make("20%", False, Opts)
key, cov = "condition", "patient_id"
md = Path(sys.argv[1]); seed = int(sys.argv[2])
if md.exists():
    model = scdit.load(md)
else:
    t0 = time.perf_counter()
    dit = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    model = scdit.fit(task.train, key, control="ctrl", seed=seed, covariate_keys=(cov,), verbose=False, dit=scdit.DiTConfig(**dit) if dit else None)
    print("fit s", round(time.perf_counter() - t0), model.summary.get("steps"), flush=True)
    model.save(md)
parts = task.parts
def predict_all(**kw):
    cells = [predict_cells(model, sorted(n), n, src, seed=seed + 1000 * i, quick=False, **kw) for i, (src, n) in enumerate(parts)]
    out = ad.concat(cells, merge="same"); out.obs_names_make_unique(); return out
variants = {"gen_counts": {"generator_only": True}, "def_counts": {}}
for g in (json.loads(sys.argv[4]) if len(sys.argv) > 4 else []):  # generator alone, guided
    variants[f"gen_g{g}"] = {"generator_only": True, "sampling": {"guidance_scale": g}}
frames = []
for name, kw in variants.items():
    p = predict_all(**kw)
    frames.append(scdit.evaluate(p, task.real, key, control="ctrl", train=task.train, covariate_key=cov,
                                 baselines=("seen_mean",) if name == "def_counts" else (), method_name=name, seed=seed))
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string(), flush=True)
t.to_csv(md.parent / f"glio_diag_{md.name}.csv")
