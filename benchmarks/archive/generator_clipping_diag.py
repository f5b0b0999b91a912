"""How far clipping generated log1p at 0 shrinks the generator alone's mean change, per
glioblastoma patient (session 22, issue #17): the change from the control cells of the decoded
cells (clipped) and of the values before clipping, against the training change, as correlation,
norm ratio and projection, for genes that the perturbation lowers and raises.

Usage, from the repository root:
  python benchmarks/archive/generator_clipping_diag.py [SETTING] MODEL_DIR
The package's match of the decoded mean (since session 22) is switched off here, to see the
cells as generated. Exploratory code (not a maintained suite).
"""
import sys, argparse, numpy as np, torch
sys.path.insert(0, "benchmarks")
import scdit
from scdit.tokenizers import _genes
from scdit.model import _targets
from suites.quality import settings
torch.set_num_threads(1)
st = settings()[sys.argv[1] if len(sys.argv) > 2 else "glioblastoma_seen"]
path = sys.argv[-1]
task = st.make(st.holdouts[0], False, argparse.Namespace())
parts = task.parts or ((task.source, task.n_cells),)
store = []
_targets.EffectTargets.match_clipped = lambda self, x0, cov_df: x0  # as generated
orig = _genes.GeneTokenizer.decode
def dec(self, tokens, obs=None):
    z = tokens.reshape(tokens.shape[0], -1)[:, : self.n_genes]
    store.append((z * self.std.to(z) + self.mean.to(z)).detach().cpu().numpy())
    return orig(self, tokens, obs)
_genes.GeneTokenizer.decode = dec
m = scdit.load(path)
genes = None
def l1p(a, g):
    a = a[:, g]
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    return X
res = []
ck = st.condition_key
for i, (src, n) in enumerate(parts[:5]):
    for c in sorted(n):
        if c == st.control: continue
        store.clear()
        g = m.predict(c, n_cells=n[c], source=src, seed=0, verbose=False, effects="none", representation="log1p")
        U = np.concatenate(store)[-n[c]:]
        G = np.asarray(g.X.toarray() if hasattr(g.X, "toarray") else g.X)
        gn = list(g.var_names)
        tg = list(m.tokenizer.genes); U = U[:, [tg.index(x) for x in gn]]
        assert np.abs(np.clip(U, 0, None) - G).max() < 1e-4
        # training treated cells of this context in log1p (normalised like evaluate)
        cov = st.covariate_key
        sel = task.train.obs[ck] == c
        if cov: sel &= task.train.obs[cov] == src.obs[cov].iloc[0]
        tr = task.train[sel]
        def norm(a):
            X = a[:, gn].X; X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
            if st.log1p_output or X.max() > 50:
                Xa = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
                tot = Xa.sum(1, keepdims=True)
                X = np.log1p(X / tot * 1e4)
            return X
        T = norm(tr); C = norm(src)
        mods = [k for k, v in enumerate(gn)]
        d = lambda A: A.mean(0) - C.mean(0)
        dt = d(T); dg = d(G); du = d(U) if U.shape[1] == len(gn) else None
        r = dict(ctx=i, c=c, corr_clip=np.corrcoef(dg, dt)[0, 1], size_clip=np.linalg.norm(dg) / np.linalg.norm(dt))
        if du is not None:
            r.update(corr_unclip=np.corrcoef(du, dt)[0, 1], size_unclip=np.linalg.norm(du) / np.linalg.norm(dt),
                     proj_clip=dg @ dt / (dt @ dt), proj_unclip=du @ dt / (dt @ dt),
                     frac_neg=(U < 0).mean())
            dn = dt < 0
            r.update(down_proj_clip=dg[dn] @ dt[dn] / (dt[dn] @ dt[dn]), down_proj_unclip=du[dn] @ dt[dn] / (dt[dn] @ dt[dn]),
                     up_proj_clip=dg[~dn] @ dt[~dn] / (dt[~dn] @ dt[~dn]), up_proj_unclip=du[~dn] @ dt[~dn] / (dt[~dn] @ dt[~dn]))
        res.append(r); print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
