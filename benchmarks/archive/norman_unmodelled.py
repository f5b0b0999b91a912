"""Norman doubles with 250 of the 500 genes modelled (session 30, 2026-12-04): the default and the
generator alone with the unmodelled genes decoded and copied (``python norman_unmodelled.py``;
the fit is saved under ``models/`` and reused). Public API plus ``benchmarks/suites``."""
import sys
from pathlib import Path
import pandas as pd, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scdit
from suites import quality as Q
from suites.common import fit_model, predict_cells
torch.set_num_threads(1)
S = Q.settings()["norman_doubles"]
task = S.make("seen2", False, None); key = S.condition_key
mp = Path("models/norman250")
if mp.exists(): model = scdit.load(mp)
else:
    model = fit_model(task.train, key, control=S.control, seed=0, quick=False, tokenizer_options={"n_top_genes": 250}); model.save(mp)
src, n = task.source, task.n_cells; conds = sorted(n)
kw = dict(seed=0, quick=False)
preds = {"default": predict_cells(model, conds, n, src, **kw),
         "gen_decode": predict_cells(model, conds, n, src, generator_only=True, **kw),
         "gen_carry": predict_cells(model, conds, n, src, generator_only=True, sampling={"unmodelled_genes": "carry"}, **kw)}
common = dict(control=S.control, train=task.train, seed=0)
frames = [scdit.evaluate(x, task.real, key, method_name=m, **common, baselines=S.baselines if i == 0 else ()) for i, (m, x) in enumerate(preds.items())]
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]].round(3).to_string(), flush=True)
