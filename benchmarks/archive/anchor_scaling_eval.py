"""The default's estimate imposed on *generated* cells by a shift (scdit's default) or by one
factor per gene (``scdit.model._targets.SCALED_KINDS`` widened to every estimate kind), on a
saved model of a quality-suite setting, fitted with the suite's defaults and saved when
MODEL_DIR does not exist (session 33, issue #17; measured neutral, not adopted).

Usage, from the repository root:
  python benchmarks/archive/anchor_scaling_eval.py SETTING HOLDOUT MODEL_DIR
e.g. ``kang B mv/kang_B`` (``KANG``: scGen's valid.h5ad) or ``norman_seen 20% MODEL``.
Exploratory code.
"""
import os, sys, time
from pathlib import Path
import anndata as ad, pandas as pd, torch
sys.path.insert(0, "benchmarks")
from suites import quality as Q
from suites.common import fit_model, predict_cells
import scdit
from scdit.model import _targets as T

def main(setting_name, holdout, model_dir, seed=0):
    torch.set_num_threads(1)
    setting = Q.settings()[setting_name]
    class Opts: kang = os.environ.get("KANG", "valid.h5ad")
    task = setting.make(holdout, False, Opts)
    key, cov = setting.condition_key, setting.covariate_key
    if Path(model_dir).exists():
        model = scdit.load(Path(model_dir))
    else:
        model = fit_model(task.train, key, control=setting.control, seed=seed, quick=False,
                          covariate_keys=(cov,) if cov else (), train_options={})
        model.save(Path(model_dir))
    parts = task.parts or ((task.source, task.n_cells),)
    def predict_all(**kw):
        cells = [predict_cells(model, sorted(n), n, src, seed=seed + 1000 * i, quick=False, **kw)
                 for i, (src, n) in enumerate(parts)]
        out = ad.concat(cells, merge="same"); out.obs_names_make_unique(); return out
    preds = {}
    for name, kinds in (("shift", ("typical",)), ("scale", ("typical", "seen", "context", "additive_shrunk"))):
        T.SCALED_KINDS = kinds
        t0 = time.perf_counter()
        preds[name] = predict_all()
        print(name, "predict s", round(time.perf_counter() - t0, 1), flush=True)
    common = dict(control=setting.control, train=task.train, covariate_key=cov, seed=seed)
    frames = [scdit.evaluate(x, task.real, key, baselines=(), method_name=m, **common) for m, x in preds.items()]
    table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
    print(setting_name, holdout, table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string(), flush=True)
    table.assign(setting=setting_name, holdout=holdout, seed=seed).to_csv(f"scale_{setting_name}_{holdout}.csv")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
