"""Norman doubles: the generator alone under ``predict`` variants (JSON of
``predict_cells`` keywords per name) on one saved default fit of the quality suite's split,
fitted and saved when MODEL_DIR does not exist (session 33, issue #17).

Usage, from the repository root:
  python benchmarks/archive/doubles_generator_variants.py MODEL_DIR \
      '{"gen": {"generator_only": true}, "c0": {"generator_only": true, "sampling": {"compose": 0}}}'
Exploratory code.
"""
import json, os, sys, time
from pathlib import Path
import anndata as ad, pandas as pd, torch
sys.path.insert(0, "benchmarks")
from suites import quality as Q
from suites.common import fit_model, predict_cells
import scdit

def main(model_dir, variants, seed=0):
    torch.set_num_threads(1)
    setting = Q.settings()["norman_doubles"]
    class Opts: kang = None
    task = setting.make(setting.holdouts[0], False, Opts)
    key = setting.condition_key
    if Path(model_dir).exists():
        model = scdit.load(Path(model_dir))
    else:
        t0 = time.perf_counter()
        model = fit_model(task.train, key, control=setting.control, seed=seed, quick=False,
                          covariate_keys=(), train_options={})
        print("fit s", round(time.perf_counter() - t0), flush=True)
        model.save(Path(model_dir))
    print({k: v for k, v in model.summary.items() if "guid" in k or "reliab" in k or k == "steps"}, flush=True)
    parts = task.parts or ((task.source, task.n_cells),)
    preds = {}
    for name, kw in variants.items():
        t0 = time.perf_counter()
        cells = [predict_cells(model, sorted(n), n, src, seed=seed + 1000 * i, quick=False, **kw)
                 for i, (src, n) in enumerate(parts)]
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique(); preds[name] = out
        print(name, "predict s", round(time.perf_counter() - t0, 1), flush=True)
    frames = [scdit.evaluate(x, task.real, key, control=setting.control, train=task.train, baselines=(), method_name=m, seed=seed) for m, x in preds.items()]
    table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
    print(table[["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]].round(4).to_string(), flush=True)
    table.to_csv(f"dbl_probe_{Path(model_dir).name}.csv")

if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
