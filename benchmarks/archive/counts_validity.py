#!/usr/bin/env python
"""Glioblastoma seen perturbations: what the counts output costs, and valid-cell decoding.

Experiment of 2026-12-03 (session 16, issue #17; figures in RESULTS.md). The quality suite's
``glioblastoma_seen`` split; ``scdit.fit`` with its defaults (argument ``default``) or a given
number of steps (``1``: the generator is the identity, so only the effect estimate acts);
``predict`` in counts and in log1p; then decoding variants applied to the log1p cells:
renormalised cells, count-unbiased rounding, and "valid and mean-matched" cells (each cell's
``expm1`` sum brought to 10^4 and each gene's mean restored, alternately, 100 rounds).
Run from the repository root: ``python benchmarks/archive/counts_validity.py default``.
``--sinkhorn`` adds the Sinkhorn-style variant (per-gene factors that keep zeros at zero).
Exploratory code (not a maintained suite).
"""
import sys, argparse
import numpy as np, pandas as pd, anndata as ad, torch, scipy.sparse as sp
sys.path.insert(0, "benchmarks")
torch.set_num_threads(2)
import scdit
from suites import quality
name = "glioblastoma_seen"
setting = quality.settings()[name]
task = setting.make("20%", False, argparse.Namespace())
key, cov = setting.condition_key, setting.covariate_key
steps = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != 'default' else None
model = scdit.fit(task.train, key, control=setting.control, covariate_keys=(cov,) if cov else (),
                  max_steps=steps, seed=0, verbose=False)
print(model.summary.get("steps"), "modelled", len(model.tokenizer.genes), "of", task.train.n_vars)
parts = task.parts
common = dict(control=setting.control, train=task.train, covariate_key=cov, seed=0)
frames = []
preds = {}
for meth, rep in [("counts", None), ("log1p", "log1p")]:
    cells = []
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            kw = {"representation": rep} if rep else {}
            cells.append(model.predict(c, n_cells=int(n[c]), source=src, seed=1000 * i + j, verbose=False, **kw))
    p = ad.concat(cells, merge="same"); p.obs_names_make_unique(); preds[meth] = p
    df = scdit.evaluate(p, task.real, key, baselines=setting.baselines if meth == "counts" else (), method_name=meth, **common)
    frames.append(df if meth == "counts" else df[df["method"] == meth])
# diagnostics: library sizes and expm1 sums
P = preds["counts"]; L = preds["log1p"]
Xc = P.X.toarray() if sp.issparse(P.X) else np.asarray(P.X)
Xl = L.X.toarray() if sp.issparse(L.X) else np.asarray(L.X)
pert = (P.obs[key] != setting.control).to_numpy()
S = np.expm1(Xl).sum(1)
print("log1p output: expm1 sum per cell, perturbed: median %.0f, IQR %.0f-%.0f" % tuple(np.percentile(S[pert], [50, 25, 75])))
print("counts output library, perturbed: median %.0f" % np.median(Xc[pert].sum(1)))
real = task.real
R = real.X.toarray() if sp.issparse(real.X) else np.asarray(real.X)
rp = (real.obs[key] != setting.control).to_numpy()
print("real perturbed held-out library: median %.0f; real control: %.0f" % (np.median(R[rp].sum(1)), np.median(R[~rp].sum(1))))
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())
from scdit.data import log1p_to_counts
from scdit.model import LIBRARY_KEY
lib = Xc.sum(1)  # not the reference lib exactly; use obs when present
if LIBRARY_KEY in P.obs: lib = P.obs[LIBRARY_KEY].to_numpy()
print("lib source:", LIBRARY_KEY in P.obs)
# reference library = the source cell's library: recover from real source cells by reference name
variants = {}
rng = np.random.default_rng(0)
labels = L.obs[key].astype(str).to_numpy()
def decode(X, libs, rounding="systematic", unbiased="log1p"):
    out = np.zeros_like(X)
    for lab in np.unique(labels):
        for pid in np.unique(L.obs[cov]):
            r = (labels == lab) & (L.obs[cov].to_numpy() == pid)
            if r.any(): out[r] = log1p_to_counts(X[r], libs[r], rng=rng, rounding=rounding, unbiased=unbiased)
    return out
# reference libs: counts output's totals approximate; better: map reference cells
ref_col = [c for c in L.obs.columns if "reference" in c.lower()]
print("ref cols", ref_col)
src_all = ad.concat([s for s, _ in parts]); 
if ref_col:
    libs = np.asarray(src_all.X.sum(1)).ravel()
    idx = pd.Index(src_all.obs_names).get_indexer(L.obs[ref_col[0]].astype(str))
    print("mapped", (idx >= 0).mean()); reflib = libs[idx]
else:
    reflib = Xc.sum(1)
S = np.expm1(Xl).sum(1, keepdims=True)
variants["a_current_from_log1p"] = decode(Xl, reflib)
variants["b_renorm"] = decode(np.log1p(np.expm1(Xl) * 1e4 / S), reflib)
variants["c_renorm_libscaled"] = decode(np.log1p(np.expm1(Xl) * 1e4 / S), reflib * S.ravel() / 1e4)
variants["d_counts_unbiased"] = decode(Xl, reflib, unbiased="counts")


def score(cells: dict) -> None:
    """Evaluate each named log1p/counts matrix (the predicted cells' obs) and print a table."""
    frames = []
    for name, X in cells.items():
        q = P.copy()
        q.X = sp.csr_matrix(X.astype(np.float32))
        df = scdit.evaluate(q, task.real, key, baselines=(), method_name=name, **common)
        frames.append(df[df["method"] == name])
    t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
    print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4).to_string())


def sums(X) -> str:
    return "median %.0f, IQR %.0f-%.0f" % tuple(np.percentile(np.expm1(X).sum(1), [50, 25, 75]))


score(variants)

from scdit.data import clipped_mean_shift  # noqa: E402

grp = (pd.Series(labels).astype(str) + "|" + L.obs[cov].astype(str).to_numpy()).to_numpy()


def valid_and_matched(X, rounds):
    """Alternately renormalise each cell (expm1 sum 1e4) and restore each gene's mean."""
    X = X.copy()
    for g in np.unique(grp):
        r = grp == g
        target = X[r].mean(0)
        x = X[r].astype(np.float64)
        for _ in range(rounds):
            x = np.log1p(np.expm1(x) * 1e4 / np.expm1(x).sum(1, keepdims=True))
            x = np.maximum(x + clipped_mean_shift(x, target), 0)
        X[r] = x
    return X


def factor_match(E, t, iters=40):
    """Per column, the factor f with mean(log1p(f E)) = t (bisection on log f)."""
    lo, hi = np.full(E.shape[1], -20.0), np.full(E.shape[1], 20.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        low = np.log1p(np.exp(mid) * E).mean(0) < t
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return np.exp((lo + hi) / 2)


def sinkhorn(X, rounds):
    """Renormalise cells and scale genes by factors (zeros stay zero), then one exact shift."""
    X = X.copy()
    for g in np.unique(grp):
        r = grp == g
        t = X[r].mean(0)
        E = np.expm1(X[r].astype(np.float64))
        for _ in range(rounds):
            E *= 1e4 / E.sum(1, keepdims=True)
            has = (E > 0).any(0)
            E[:, has] *= factor_match(E, t)[has]
        x = np.log1p(E)
        X[r] = np.maximum(x + clipped_mean_shift(x, t), 0)  # exact mean (zeros-only genes)
    return X


cells = {"renorm_log1p_only": np.log1p(np.expm1(Xl) * 1e4 / np.expm1(Xl).sum(1, keepdims=True))}
for rounds in (100,):
    Xv = valid_and_matched(Xl, rounds)
    print(rounds, "rounds, expm1 sums:", sums(Xv))
    cells[f"valid{rounds}_log1p"], cells[f"valid{rounds}_counts"] = Xv, decode(Xv, reflib)
if "--sinkhorn" in sys.argv:
    for rounds in (3, 10):
        Xv = sinkhorn(Xl, rounds)
        print(rounds, "Sinkhorn rounds, expm1 sums:", sums(Xv))
        cells[f"sk{rounds}_log1p"], cells[f"sk{rounds}_counts"] = Xv, decode(Xv, reflib)
score(cells)
