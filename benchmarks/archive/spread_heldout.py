"""Held-out contexts: the generated spread calibrated or raw (session 31, 2026-12-04).

``SEED=s python spread_heldout.py SETTING HOLDOUT MODEL_DIR`` loads a model saved by
``time_sampling_heldout.py`` (the quality suite's default fit of one held-out unit of
``SETTING``: ``kang`` or ``glioblastoma_patients``) and prints Pearson Δ / top-20-DE Pearson Δ /
energy distance of the generator alone (``gen_*``) and the default (``def_*``), predicted with
``SamplingConfig(spread="raw")`` and with ``spread="auto"`` (which calibrates a held-out-context
fit; ``SPREAD=calibrated`` forces it, e.g. on the seen settings, session 32), plus the
prediction time (the first calibrated prediction measures the factors). The
baselines are the quality suite's (``run.py quality``). Kang needs ``KANG`` (scGen's
validation file). One thread. Public API plus ``benchmarks/suites``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from suites import quality as Q  # noqa: E402
from suites.common import predict_cells  # noqa: E402

import scdit  # noqa: E402


def main(setting_name: str, holdout: str, model_dir: str, seed: int) -> None:
    torch.set_num_threads(1)
    setting = Q.settings()[setting_name]

    class Opts:
        kang = os.environ.get("KANG", "valid.h5ad")

    task = setting.make(holdout, False, Opts)
    key, cov = setting.condition_key, setting.covariate_key
    model = scdit.load(Path(model_dir))
    parts = task.parts or ((task.source, task.n_cells),)

    def predict_all(**kw) -> ad.AnnData:
        cells = [predict_cells(model, sorted(n), n, src, seed=seed + 1000 * i, quick=False, **kw)
                 for i, (src, n) in enumerate(parts)]
        out = ad.concat(cells, merge="same")
        out.obs_names_make_unique()
        return out

    preds = {}
    for spread in ("raw", os.environ.get("SPREAD", "auto")):
        t0 = time.perf_counter()
        for generator_only in (True, False):
            name = f"{'gen' if generator_only else 'def'}_{spread}"
            preds[name] = predict_all(generator_only=generator_only,
                                      sampling={"spread": spread})
        print(spread, "predict s", round(time.perf_counter() - t0, 1), flush=True)
    common = dict(control=setting.control, train=task.train, covariate_key=cov, seed=seed)
    frames = [scdit.evaluate(x, task.real, key, baselines=(), method_name=m, **common)
              for m, x in preds.items()]
    table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
    print(holdout, table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(3)
          .to_string(), flush=True)
    table.assign(setting=setting_name, holdout=holdout, seed=seed).to_csv(
        f"spread_{setting_name}_{holdout}_s{seed}.csv")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(os.environ.get("SEED", 0)))
