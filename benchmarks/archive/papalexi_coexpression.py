"""Papalexi unseen measured targets (session 30): the mean baseline, the target gene alone moved by
the seen targets' mean on-target change, and that plus co-expression slopes (control cells) times
it; Pearson Δ, top-20 DE, L1 and cosine discrimination per fold. No model."""
import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import numpy as np, scanpy as sc, scdit
from scdit.evaluate._metrics import discrimination
from suites.quality import PAPALEXI_FOLDS
a = scdit.datasets.papalexi21_thp1(); a.obs["perturbation"] = a.obs["perturbation"].astype(str)
sc.pp.normalize_total(a, target_sum=1e4); sc.pp.log1p(a)
X = np.asarray(a.X.todense() if hasattr(a.X, "todense") else a.X, dtype=np.float64)
lab = a.obs["perturbation"].to_numpy(); genes = list(a.var_names)
targets = sorted(set(lab) - {"control"}); measured = [t for t in targets if t in genes]
ctrl = X[lab == "control"]; cm = ctrl.mean(0); C = ctrl - cm
eff = {t: X[lab == t].mean(0) - cm for t in targets}
tidx = [genes.index(t) for t in measured]
print({t: (round(float(eff[t][genes.index(t)]),2), round(float(np.abs(np.delete(eff[t], tidx)).sum()),1), round(float(C[:, genes.index(t)].std()),2), round(float(cm[genes.index(t)]),2)) for t in measured})
def pear(x, y): x = x - x.mean(); y = y - y.mean(); return float(x @ y / np.sqrt((x @ x) * (y @ y)))
def score(P, R):
    top = [pear(P[i][np.argsort(-np.abs(R[i]))[:20]], R[i][np.argsort(-np.abs(R[i]))[:20]]) for i in range(len(R))]
    return (round(np.mean([pear(P[i], R[i]) for i in range(len(R))]),3), round(np.mean(top),3),
            round(discrimination(P, R, "l1", exclude_genes=tidx).mean(),3), round(discrimination(P, R, "cosine", exclude_genes=tidx).mean(),3))
for fold, held in PAPALEXI_FOLDS.items():
    seen = [t for t in targets if t not in held]
    typ = np.mean([eff[t] for t in seen], 0)
    seen_m = [t for t in seen if t in genes]
    on = np.mean([eff[t][genes.index(t)] for t in seen_m]) if seen_m else -0.5
    R = np.array([eff[h] for h in held]); res = {}
    for name in ("mean", "target", "coexpr", "ridge", "corr"):
        P = []
        for h in held:
            g = genes.index(h); p = typ.copy(); v = C[:, g] @ C[:, g] / len(C)
            cov = C.T @ C[:, g] / len(C)
            if name == "coexpr": p = typ + cov / v * on
            if name == "ridge": p = typ + cov / (v + np.median(C.var(0))) * on
            if name == "corr": p = typ + cov / np.sqrt(v) / C.std(0).clip(1e-6) * C.std(0) * on / max(np.sqrt(v),1e-6) * min(1, np.sqrt(v))
            p[g] = typ[g] + on if name != "mean" else typ[g]
            P.append(p)
        res[name] = score(np.array(P), R)
    print(fold, res)
