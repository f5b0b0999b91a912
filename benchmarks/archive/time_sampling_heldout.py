"""Held-out contexts: uniform against logit-normal training times (session 31, 2026-12-04).

``SEED=s python time_sampling_heldout.py SETTING HOLDOUT NAME OPTIONS_JSON`` fits the quality
suite's default model for one held-out unit of ``SETTING`` (``kang``: a cell type;
``glioblastoma_patients``: a patient), with ``OPTIONS_JSON`` holding ``TrainConfig`` fields and,
under ``"flow"``, ``FlowConfig`` fields (e.g. ``'{"flow": {"time_sampling": "uniform"}}'``),
saves it under ``mv/`` (reused), and prints Pearson Δ / top-20-DE Pearson Δ / energy distance of
the generator alone (``NAME_gen``) and the default (``NAME_def``), plus the median per-gene
variance ratio of the predicted to the real perturbed cells. The baselines are the quality
suite's (``run.py quality``), which this script does not repeat. Kang needs ``KANG`` (scGen's
validation file). One thread. Public API plus ``benchmarks/suites``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from suites import quality as Q  # noqa: E402
from suites.common import fit_model, predict_cells  # noqa: E402

import scdit  # noqa: E402


def dense(X) -> np.ndarray:
    return np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float64)


def main(setting_name: str, holdout: str, name: str, opts: dict, seed: int) -> None:
    torch.set_num_threads(1)
    setting = Q.settings()[setting_name]

    class Opts:
        kang = os.environ.get("KANG", "valid.h5ad")

    flow = opts.pop("flow", None)
    task = setting.make(holdout, False, Opts)
    key, cov = setting.condition_key, setting.covariate_key
    where = Path(f"mv/{setting_name}_{holdout}_{name}" + (f"_s{seed}" if seed else ""))
    if where.exists():
        model = scdit.load(where)
    else:
        fit = scdit.fit
        if flow is not None:  # fit_model has no flow keyword: pass the FlowConfig fields through
            scdit.fit = lambda *a, **k: fit(*a, flow=flow, **k)
        try:
            model = fit_model(task.train, key, control=setting.control, seed=seed, quick=False,
                              covariate_keys=(cov,) if cov else (), train_options=opts)
        finally:
            scdit.fit = fit
        model.save(where)
    parts = task.parts or ((task.source, task.n_cells),)

    def predict_all(**kw) -> ad.AnnData:
        cells = [predict_cells(model, sorted(n), n, src, seed=seed + 1000 * i, quick=False, **kw)
                 for i, (src, n) in enumerate(parts)]
        out = ad.concat(cells, merge="same")
        out.obs_names_make_unique()
        return out

    real = task.real
    r = dense(real[(real.obs[key] != setting.control).to_numpy()].X)
    keep = r.var(0) > 0.05
    preds = {f"{name}_gen": predict_all(generator_only=True), f"{name}_def": predict_all()}
    for method, x in preds.items():
        ratio = np.median(dense(x.X).var(0)[keep] / r.var(0)[keep])
        print(holdout, method, "variance ratio", round(float(ratio), 3), flush=True)
    common = dict(control=setting.control, train=task.train, covariate_key=cov, seed=seed)
    frames = [scdit.evaluate(x, real, key, baselines=(), method_name=m, **common)
              for m, x in preds.items()]
    table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
    print(holdout, table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(3)
          .to_string(), flush=True)
    table.assign(setting=setting_name, holdout=holdout, seed=seed).to_csv(
        f"tv_{setting_name}_{holdout}_{name}_s{seed}.csv")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]),
         int(os.environ.get("SEED", 0)))
