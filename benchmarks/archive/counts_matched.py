"""Counts rounding whose renormalised log1p means match the generated means (session 20,
issue 17; figures in RESULTS.md).

Usage, from the repository root: ``MODE=... python benchmarks/archive/counts_matched.py
SETTING MODEL_DIR`` on a saved quality-suite model. ``MODE=baseline``: the package's own
decoding (systematic rounding before commit cdc3b4e, matched rounding since); ``MODE=match``:
the first prototype of matched rounding (per chunk and patient, nearest mean, no bracket draw);
``MODE=valid10``: each context's log1p cells first made valid (``expm1`` sums of 10^4) with their
means kept, 10 alternations, then the package's rounding. ``REP=log1p`` scores the log1p output,
``GENONLY=1`` only the generator alone. Exploratory code (not a maintained suite).
"""
import os, sys, time, argparse
sys.path.insert(0, "benchmarks")
import numpy as np, pandas as pd, anndata as ad, torch
torch.set_num_threads(1)
import scdit
import scdit.model._output as O
from scdit.data import log1p_to_counts
from suites.quality import settings

def matched_counts(x, lib, groups, rng, iters=4, eligible_only=True):
    x = np.clip(np.asarray(x, np.float64), 0, None)
    scale = np.asarray(lib, np.float64)[:, None] / 1e4
    mu = np.expm1(x) * scale
    k = np.floor(mu)
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
    lo, hi = np.log1p(k * inv), np.log1p((k + 1) * inv)
    p = np.clip(np.divide(x - lo, hi - lo, out=np.zeros_like(x), where=hi > lo), 0, 1)
    u = rng.random(x.shape)
    s = p - u
    if eligible_only:
        s = np.where(p > 0, s, -np.inf)
    up = s > 0
    for g in np.unique(groups):
        r = np.flatnonzero(groups == g)
        t = x[r].mean(0)
        order = np.argsort(-s[r], axis=0)  # most eligible first
        kk = k[r]
        n = len(r)
        for _ in range(iters):
            C = kk + up[r]
            L = C.sum(1, keepdims=True)
            f = np.divide(1e4, L, out=np.zeros_like(L), where=L > 0)
            ylo, yhi = np.log1p(kk * f), np.log1p((kk + 1) * f)
            inc = np.take_along_axis(yhi - ylo, order, 0)
            ok = np.take_along_axis(np.isfinite(s[r]), order, 0)
            inc = np.where(ok, inc, 0)
            cum = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(inc, 0)]) / n
            gap = np.abs(ylo.mean(0)[None, :] + cum - t[None, :])
            m = gap.argmin(0)  # number rounded up per gene
            newup = np.zeros((n, x.shape[1]), bool)
            np.put_along_axis(newup, order, np.arange(n)[:, None] < m[None, :], 0)
            up[r] = newup & np.isfinite(s[r])
    return (k + up).astype(np.float32)

MODE = os.environ.get("MODE", "baseline")
cov_key = None
orig_decode = O.decode_chunk
def decode_chunk(cells, tokenizer, tokens, X, obs, rng, representation, depth=None):
    if MODE == "baseline" or representation == "log1p":
        return orig_decode(cells, tokenizer, tokens, X, obs, rng, representation, depth)
    import scipy.sparse as sp
    X = X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float32)
    X = X.astype(np.float32, copy=False)
    idx = cells.modelled
    z = torch.as_tensor(tokens, dtype=torch.float32)
    lib = obs[O.LIBRARY_KEY].to_numpy()
    if depth is not None:
        lib = lib * depth
    groups = obs[cov_key].astype(str).to_numpy() if cov_key else np.zeros(len(obs), int)
    X[:, idx] = matched_counts(tokenizer.decode(z, obs=obs).numpy(), lib, groups, rng,
                               eligible_only=(MODE == "match"))
    return X
O.decode_chunk = decode_chunk
orig_to_counts = O.CellWriter._to_counts
def _to_counts(self, X, a, e):
    if MODE.startswith("valid"):
        from scdit.data import clipped_mean_shift
        R = int(MODE[5:] or 10)
        keys = self.cells.context_keys(self.cells.frame(self.ref), self.ref.n_obs)
        groups = pd.factorize(pd.Series(keys, dtype=object))[0][a:e]
        X = np.array(X, dtype=np.float64)
        for g in np.unique(groups):
            r = groups == g
            t = X[r].mean(0); x = X[r]
            for _ in range(R):
                x = np.log1p(np.expm1(x) * 1e4 / np.expm1(x).sum(1, keepdims=True))
                x = np.maximum(x + clipped_mean_shift(x, t), 0)
            X[r] = x
    return orig_to_counts(self, X, a, e)
O.CellWriter._to_counts = _to_counts

name, path = sys.argv[1], sys.argv[2]
st = settings()[name]
task = st.make(st.holdouts[0], False, argparse.Namespace())
model = scdit.load(path)
parts = task.parts or ((task.source, task.n_cells),)
key, cov = st.condition_key, st.covariate_key
cov_key = cov
common = dict(control=st.control, train=task.train, covariate_key=cov, seed=0)
frames = []
REP = {"representation": "log1p"} if os.environ.get("REP") == "log1p" else {}
VARS = [(MODE, dict(REP)), (MODE + "_gen", {"effects": "none", **REP})]
if os.environ.get("GENONLY"):
    VARS = VARS[1:]
for method, kw in VARS:
    t0 = time.time(); cells = []
    for i, (src, n) in enumerate(parts):
        for j, c in enumerate(sorted(n)):
            cells.append(model.predict(c, n_cells=n[c], source=src, seed=1000 * i + j, verbose=False, **kw))
    out = ad.concat(cells, merge="same"); out.obs_names_make_unique()
    df = scdit.evaluate(out, task.real, key, baselines=st.baselines if not frames else (), method_name=method, **common)
    frames.append(df if not frames else df[df["method"] == method])
    print(method, round(time.time() - t0, 1), "s", flush=True)
t = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(5).to_string())
