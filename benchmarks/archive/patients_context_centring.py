"""Held-out glioblastoma patient: does centring each patient's cells on its control mean help the
generator alone? (session 35, issue #17)

The bundled counts as log1p; ``center``: every cell minus its patient's control mean plus one
offset (non-negative input), fitted with the quality suite's defaults (covariate
``patient_id``, the split of ``split_covariate_context``), predicted from the held-out patient's
control cells and mapped back; ``plain``: the same log1p data uncentred. Both modes skip the
per-cell renormalisation of unseen-context log1p output (a patch), so they share one protocol
(not the suite's counts protocol). Writes ``ctx_PATIENT_MODE_sSEED.csv``.

Usage, from the repository root:
  python benchmarks/archive/patients_context_centring.py PATIENT SEED plain|center
Exploratory code.
"""
import sys, time
import numpy as np, pandas as pd, anndata as ad, torch, scipy.sparse as sp
torch.set_num_threads(1)
import scdit
from scdit.data import to_log1p
from scdit.splits import split_covariate_context
import scdit.model._output as O
O.renormalise_log1p = lambda X, columns=None: X  # same protocol for both modes
sys.path.insert(0, "benchmarks")
from suites.common import fit_model
patient, seed, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
a = scdit.datasets.glioblastoma_panobinostat()
X = to_log1p(a.X); X = X.toarray() if sp.issparse(X) else np.asarray(X)
b = ad.AnnData(X.astype(np.float32), obs=a.obs[["patient_id", "condition"]].copy(), var=a.var[[]].copy())
split = split_covariate_context(b, "condition", "patient_id", context=patient, control="ctrl")
train, test = split.subset(b)
source = b[b.obs_names.isin(split.params["source_obs_names"])].copy()
mu = {p: X[((b.obs.patient_id == p) & (b.obs.condition == "ctrl")).to_numpy()].mean(0) for p in b.obs.patient_id.unique()}
off = float(np.ceil(max(m.max() for m in mu.values())))
def enc(x):
    if mode == "plain": return x
    y = x.copy(); pid = y.obs.patient_id.to_numpy()
    M = np.stack([mu[p] for p in pid]); y.X = (np.asarray(y.X) - M + off).astype(np.float32); return y
def dec(x):
    if mode == "plain": return x
    y = x.copy(); pid = y.obs.patient_id.astype(str).to_numpy(); y.X = y.X.toarray() if sp.issparse(y.X) else y.X
    M = np.stack([mu[p] for p in pid]); y.X = np.clip(np.asarray(y.X) + M - off, 0, None).astype(np.float32); return y
t0 = time.perf_counter()
model = fit_model(enc(train), "condition", control="ctrl", seed=seed, quick=False, covariate_keys=("patient_id",))
print("fit s", round(time.perf_counter() - t0), model.summary.get("steps"), flush=True)
real = ad.concat([test, source], merge="same"); real.obs_names_make_unique()
frames = []
for name, eff in (("gen", "none"), ("default", "auto")):
    p = model.predict("panobinostat", n_cells=500, source=enc(source), seed=seed, effects=eff, verbose=False)
    p = dec(p)
    df = scdit.evaluate(p, real, "condition", control="ctrl", train=train, covariate_key="patient_id",
                        baselines=("context_shift",) if name == "gen" else (), method_name=f"{mode}_{name}", seed=seed)
    frames.append(df)
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string(), flush=True)
t.to_csv(f"ctx_{patient}_{mode}_s{seed}.csv")
