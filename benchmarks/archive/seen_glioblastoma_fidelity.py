"""Glioblastoma seen: how closely the generator alone reproduces the training means it was fitted
on (session 35, issue #17).

For a saved default fit of the quality suite's ``glioblastoma_seen`` split (e.g. from
``seen_glioblastoma_variants.py``), each patient's training control cells are carried under
panobinostat by the generator alone (``effects="none"``, seed 0) and the generated mean change
(log1p of the modelled genes) is compared with the training cells' own: correlation before and
after clipping at 0, the slope of the generated change on the real one, the RMS error by
tercile of the genes' zero fraction, and the correlation after rounding the generated cells to
counts at their source cells' library sizes (nearest, zeroing below half a count, stochastic).

Usage, from the repository root:
  python benchmarks/archive/seen_glioblastoma_fidelity.py MODEL_DIR
Exploratory code.
"""
import sys
sys.path.insert(0, "benchmarks")
import numpy as np, torch, scipy.sparse as sp
torch.set_num_threads(1)
import scdit
from scdit.data import to_log1p
from scdit.data._representation import TARGET_SUM
from suites import quality as Q

setting = Q.settings()["glioblastoma_seen"]
class Opts: kang = None
task = setting.make("20%", False, Opts)
model = scdit.load(sys.argv[1]); tok = model.tokenizer; gi = tok.gene_idx
tr = task.train
def L(a): X = to_log1p(a.X, "counts"); return X.toarray() if sp.issparse(X) else np.asarray(X)
rng = np.random.default_rng(0)
rows = []
for p in sorted(tr.obs.patient_id.unique()):
    c = tr[(tr.obs.patient_id == p) & (tr.obs.condition == "ctrl")]
    t = tr[(tr.obs.patient_id == p) & (tr.obs.condition == "panobinostat")]
    cm, tm = L(c)[:, gi].mean(0), L(t)[:, gi].mean(0)
    zf = (L(t)[:, gi] == 0).mean(0)
    toks = torch.as_tensor(model.sample("panobinostat", c.n_obs, covariates={"patient_id": p}, seed=0,
                                        effects="none", source_tokens=model.encode(c), output="tokens", verbose=False))
    raw = (toks.reshape(len(toks), -1)[:, :tok.n_genes] * tok.std + tok.mean).numpy()
    z = np.clip(raw, 0, None)
    lib = np.asarray(c.X.sum(1)).ravel()[:, None]
    k = np.expm1(z) * lib / TARGET_SUM
    back = lambda kk: np.log1p(kk * TARGET_SUM / lib)
    dt = tm - cm
    r = lambda x: np.corrcoef(x.mean(0) - cm, dt)[0, 1]
    dg = z.mean(0) - cm; e = dg - dt
    bins = np.digitize(zf, np.quantile(zf, [1 / 3, 2 / 3]))
    row = {"patient": p, "raw": r(raw), "clipped": r(z), "slope": (dg @ dt) / (dt @ dt),
           "nearest": r(back(np.round(k))), "half_count": r(back(np.where(k < 0.5, 0, k))),
           "stochastic": r(back(np.floor(k) + (rng.random(k.shape) < k - np.floor(k)))),
           **{f"rmse_zf{b}": float(np.sqrt(np.mean(e[bins == b] ** 2))) for b in range(3)},
           "negative_share": float(np.mean(raw < 0))}
    rows.append(row); print({k_: (v if isinstance(v, str) else round(float(v), 4)) for k_, v in row.items()}, flush=True)
print("mean", {k_: round(float(np.mean([x[k_] for x in rows])), 4) for k_ in rows[0] if k_ != "patient"})
