"""Kang 2018, one held-out cell type: the default and the generator alone of one fit with extra
``fit`` keywords (session 28, issue #17). Usage:
python benchmarks/archive/kang_fit_variants.py CELLTYPE "{'max_steps': 1000}"
(keywords as a Python literal; ``scdit.TokenizerConfig(...)`` allowed). Reads scGen's valid.h5ad
from KANG (default /work/scratch/s27/valid.h5ad)."""
import os, sys, time, argparse, warnings
sys.path.insert(0, "benchmarks")
warnings.simplefilter("ignore")
import torch; torch.set_num_threads(1)
import scdit
from suites.quality import settings
from suites.common import predict_cells
holdout = sys.argv[1] if len(sys.argv) > 1 else "CD4T"
extra = eval(sys.argv[2]) if len(sys.argv) > 2 else {}
st = settings()["kang"]
task = st.make(holdout, False, argparse.Namespace(kang=os.environ.get("KANG", "/work/scratch/s27/valid.h5ad")))
t0 = time.time()
model = scdit.fit(task.train, "condition", control="control", covariate_keys=("cell_type",), seed=0,
                  verbose=False, **extra)
print("fit", round(time.time() - t0), "s", model.summary.get("steps"), flush=True)
common = dict(control="control", train=task.train, covariate_key="cell_type", seed=0)
for name, gen, samp in [("default", False, None), ("gen", True, None)]:
    pred = predict_cells(model, sorted(task.n_cells), task.n_cells, task.source, seed=0, quick=False,
                         generator_only=gen, sampling=samp)
    df = scdit.evaluate(pred, task.real, "condition", baselines=("context_shift",), method_name="m", **common)
    g = df[df.metric.isin(["pearson_delta", "pearson_delta_de", "energy_distance"])].groupby(["method", "metric"]).value.mean().unstack()
    print(f"{name:10s}", "%.3f / %.3f / %.3f" % tuple(g.loc["m", ["pearson_delta", "pearson_delta_de", "energy_distance"]]),
          "| shift %.3f / %.3f / %.3f" % tuple(g.loc["context_shift", ["pearson_delta", "pearson_delta_de", "energy_distance"]]), flush=True)
