"""Held-out glioblastoma patients with only N of the 300 genes modelled (session 30, 2026-12-04).

``python patients_unmodelled.py N PATIENT [PATIENT ...]``: per patient, the default fit (seed 0,
``TokenizerConfig(n_top_genes=N)``; saved under ``models/``, reused), scored as the quality suite
scores it: the default, and the generator alone with the unmodelled genes decoded
(``SamplingConfig(unmodelled_genes="decode")``, the default) and copied (``"carry"``).
Public API plus ``benchmarks/suites``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from suites import quality as Q  # noqa: E402
from suites.common import predict_cells  # noqa: E402

import scdit  # noqa: E402


def main(n_top: int, holdouts: list[str]) -> None:
    torch.set_num_threads(1)
    setting = Q.settings()["glioblastoma_patients"]
    key, cov = setting.condition_key, setting.covariate_key
    for h in holdouts:
        task = setting.make(h, False, None)
        where = Path(f"models/gb{n_top}_{h}")
        if where.exists():
            model = scdit.load(where)
        else:
            model = scdit.fit(task.train, key, control=setting.control, covariate_keys=(cov,),
                              seed=0, verbose=False,
                              tokenizer=scdit.TokenizerConfig(n_top_genes=n_top))
            model.save(where)
        (src, n), = task.parts or ((task.source, task.n_cells),)
        conds = sorted(n)
        kw = dict(seed=0, quick=False)
        preds = {"default": predict_cells(model, conds, n, src, **kw),
                 "gen_decode": predict_cells(model, conds, n, src, generator_only=True, **kw),
                 "gen_carry": predict_cells(model, conds, n, src, generator_only=True,
                                            sampling={"unmodelled_genes": "carry"}, **kw)}
        common = dict(control=setting.control, train=task.train, covariate_key=cov, seed=0)
        frames = [scdit.evaluate(x, task.real, key, method_name=m, **common,
                                 baselines=setting.baselines if i == 0 else ())
                  for i, (m, x) in enumerate(preds.items())]
        table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
        print(h, table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(3)
              .to_string(), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
