"""Kang held-out cell type with the PCA tokenizer (session 30): the default and the generator alone
with the unmodelled genes decoded and copied. ``python kang_pca_unmodelled.py CELLTYPE VALID_H5AD``."""
import sys
from pathlib import Path
import pandas as pd, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scdit
from suites import quality as Q
from suites.common import fit_model, predict_cells
class O: kang = sys.argv[2]  # scGen valid.h5ad
torch.set_num_threads(1)
S = Q.settings()["kang"]
h = sys.argv[1]
task = S.make(h, False, O); key, cov = S.condition_key, S.covariate_key
model = fit_model(task.train, key, control=S.control, seed=0, quick=False, covariate_keys=(cov,), tokenizer="pca")
(src, n), = (task.parts or ((task.source, task.n_cells),)); conds = sorted(n)
kw = dict(seed=0, quick=False)
preds = {"default": predict_cells(model, conds, n, src, **kw),
         "gen_decode": predict_cells(model, conds, n, src, generator_only=True, **kw),
         "gen_carry": predict_cells(model, conds, n, src, generator_only=True, sampling={"unmodelled_genes": "carry"}, **kw)}
common = dict(control=S.control, train=task.train, covariate_key=cov, seed=0)
frames = [scdit.evaluate(x, task.real, key, method_name=m, **common, baselines=S.baselines if i == 0 else ()) for i, (m, x) in enumerate(preds.items())]
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(h, "pca", t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(3).to_string(), flush=True)
