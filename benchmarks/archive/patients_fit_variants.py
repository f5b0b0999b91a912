"""Held-out glioblastoma patients: the generator alone and the default of fits with extra ``fit``
keywords (session 28, issue #17). Usage:
python benchmarks/archive/patients_fit_variants.py "{'flow': {'source_noise': 0.1}}" [SEED]
Fits each patient split and prints the generator alone, the default and the mean shift
(Pearson Δ / energy)."""
import ast, sys, time, argparse, warnings
sys.path.insert(0, "benchmarks")
warnings.simplefilter("ignore")
import torch; torch.set_num_threads(1)
import scdit
from suites.quality import settings
from suites.common import predict_cells
extra = ast.literal_eval(sys.argv[1]); seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
st = settings()["glioblastoma_patients"]
for p in st.holdouts:
    task = st.make(p, False, argparse.Namespace())
    t0 = time.time()
    model = scdit.fit(task.train, "condition", control="ctrl", covariate_keys=("patient_id",), seed=seed,
                      verbose=False, **extra)
    fit_s = time.time() - t0
    common = dict(control="ctrl", train=task.train, covariate_key="patient_id", seed=seed)
    out = []
    for gen in (True, False):
        pred = predict_cells(model, sorted(task.n_cells), task.n_cells, task.source, seed=seed, quick=False, generator_only=gen)
        df = scdit.evaluate(pred, task.real, "condition", baselines=("context_shift",) if gen else (), method_name="m", **common)
        g = df[df.metric.isin(["pearson_delta", "energy_distance"])].groupby(["method", "metric"]).value.mean().unstack()
        out.append(g)
    print(p, f"{extra} fit {fit_s:.0f}s steps {model.summary.get('steps')}",
          "gen %.3f / %.2f" % tuple(out[0].loc["m", ["pearson_delta", "energy_distance"]]),
          "default %.3f / %.2f" % tuple(out[1].loc["m", ["pearson_delta", "energy_distance"]]),
          "shift %.3f / %.2f" % tuple(out[0].loc["context_shift", ["pearson_delta", "energy_distance"]]), flush=True)
