"""Held-out Norman K562 doubles without a model: additive from raw vs shrunk training effects.

The additive baseline predicts a double ``A+B`` as ``control + d_A + d_B`` from the training
effects ``d = mean − control mean``. With ~100 cells per perturbation the effects of weak
perturbations are about as large as their sampling noise (norm 0.38–0.53 vs ~0.37 here), and
the noise enters the prediction. ``scdit._shrinkage`` replaces each effect by its empirical-
Bayes posterior mean under a Gaussian prior whose covariance is estimated from all training
effects of the context (the library's ``predict(..., shrink=)`` does the same in token space
for anchored predictions). This script scores, on the five K562 doubles whose singles are in
the bundled data (all cells of the other 28 K562 conditions as training):

1. raw vs shrunk additive on the full data, per double;
2. 30 bootstrap resamples of the training cells (how often shrinkage wins);
3. fewer training perturbations (random subsets of the 23 that are not members), i.e. how
   many effects the prior needs (the library default uses it from 10 on);
4. the units the shrinkage works in: log1p expression (the library's choice) vs standardised
   genes (each gene divided by its training standard deviation, the genes tokenizer's tokens);
5. seen perturbations: every K562 condition's cells split in half (10 random splits); its
   raw vs shrunk training-half effect scored against the other half (``--seen-reps``).

Usage::

    python -P benchmarks/doubles_shrinkage.py
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boot", type=int, default=30, help="bootstrap resamples")
    p.add_argument("--subsets", type=int, default=20, help="random subsets per size")
    p.add_argument("--seen-reps", type=int, default=10, help="half/half splits for seen perturbations")
    args = p.parse_args(argv)
    from scdit._shrinkage import effect_prior, posterior_effect
    from scdit.datasets import norman19_devel
    from scdit.evaluate._metrics import pearson

    a = norman19_devel()
    a = a[a.obs["cell_type"] == "k562"]
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    lab = a.obs["condition"].astype(str).to_numpy()
    conds = sorted(set(lab))
    rows = {c: np.flatnonzero(lab == c) for c in conds}
    singles = [c for c in conds if "+" not in c and c != "control"]
    held = [d for d in conds if "+" in d and all(m in singles for m in d.split("+"))]
    members = sorted({m for d in held for m in d.split("+")})
    truth = {d: X[rows[d]].mean(0) for d in held}

    def score(sel: dict, train: list[str], scale: np.ndarray | None = None) -> dict:
        """Pearson Δ per (method, double); shrinkage in units of ``X / scale``."""
        u = X if scale is None else X / scale
        mean = {c: u[r].mean(0) for c, r in sel.items()}
        se2 = {c: u[r].var(0, ddof=1) / len(r) for c, r in sel.items()}
        ctrl = mean["control"]
        noise = {c: se2[c] + se2["control"] for c in train}
        sigma = effect_prior(np.stack([mean[c] - ctrl for c in train]),
                             np.stack([noise[c] for c in train]))
        out = {}
        for d in held:
            A, B = d.split("+")
            real = truth[d] - ctrl * (1 if scale is None else scale)
            out[("additive", d)] = pearson(mean[A] + mean[B] - 2 * ctrl, real / (1 if scale is None else scale))
            shrunk = sum(posterior_effect(mean[m] - ctrl, noise[m], sigma) for m in (A, B))
            out[("shrunk additive", d)] = pearson(shrunk * (1 if scale is None else scale), real)
        return out

    train_all = [c for c in conds if c not in held and c != "control"]
    base = {c: rows[c] for c in conds if c not in held}
    full = pd.Series(score(base, train_all)).unstack(0)
    print(f"Per double, full data ({len(train_all)} training perturbations):")
    print(full.round(3).to_string())
    print(full.mean().round(4).to_string(), "\n")

    rng = np.random.default_rng(0)
    boots = []
    for _ in range(args.boot):
        sel = {c: rng.choice(r, len(r)) for c, r in base.items()}
        boots.append(pd.Series(score(sel, train_all)).groupby(level=0).mean())
    boots = pd.DataFrame(boots)
    wins = int((boots["shrunk additive"] > boots["additive"]).sum())
    print(f"Bootstrap of the training cells ({args.boot}): additive "
          f"{boots['additive'].mean():.4f} ± {boots['additive'].std():.4f}, shrunk "
          f"{boots['shrunk additive'].mean():.4f} ± {boots['shrunk additive'].std():.4f}; "
          f"shrunk better in {wins}/{args.boot}\n")

    others = [c for c in train_all if c not in members]
    table = []
    for extra in (0, 1, 3, 6, 10, len(others)):
        reps = 1 if extra in (0, len(others)) else args.subsets
        vals = []
        for _ in range(reps):
            train = members + list(rng.choice(others, extra, replace=False))
            vals.append(pd.Series(score(base, train)).groupby(level=0).mean())
        v = pd.DataFrame(vals)
        table.append({"training perturbations": len(members) + extra,
                      "additive": v["additive"].mean(),
                      "shrunk mean": v["shrunk additive"].mean(),
                      "shrunk min": v["shrunk additive"].min()})
    print("Fewer training perturbations for the prior (random subsets):")
    print(pd.DataFrame(table).round(4).to_string(index=False), "\n")

    train_rows = np.concatenate([base[c] for c in base])
    std = X[train_rows].std(0)
    std = np.where(std > 0, std, 1.0)
    units = []
    for b in range(args.boot + 1):
        sel = base if b == 0 else {c: rng.choice(r, len(r)) for c, r in base.items()}
        units.append({u: pd.Series(score(sel, train_all, sc)).groupby(level=0).mean()["shrunk additive"]
                      for u, sc in (("log1p", None), ("standardised", std))})
    units = pd.DataFrame(units)
    print(f"Units of the shrinkage: full data log1p {units['log1p'][0]:.4f} vs standardised "
          f"{units['standardised'][0]:.4f}; bootstrap {units['log1p'][1:].mean():.4f} vs "
          f"{units['standardised'][1:].mean():.4f}, log1p better in "
          f"{int((units['log1p'][1:] > units['standardised'][1:]).sum())}/{args.boot}")


    seen = []
    for _ in range(args.seen_reps):
        tr, te = {}, {}
        for c in conds:
            r = rng.permutation(rows[c])
            tr[c], te[c] = r[: len(r) // 2], r[len(r) // 2:]
        mean = {c: X[r].mean(0) for c, r in tr.items()}
        se2 = {c: X[r].var(0, ddof=1) / len(r) for c, r in tr.items()}
        ctrl, ctest = mean["control"], X[te["control"]].mean(0)
        perts = [c for c in conds if c != "control"]
        noise = {c: se2[c] + se2["control"] for c in perts}
        sigma = effect_prior(np.stack([mean[c] - ctrl for c in perts]),
                             np.stack([noise[c] for c in perts]))
        real = {c: X[te[c]].mean(0) - ctest for c in perts}
        seen.append({"raw": np.mean([pearson(mean[c] - ctest, real[c]) for c in perts]),
                     "shrunk": np.mean([pearson(ctrl + posterior_effect(mean[c] - ctrl, noise[c], sigma)
                                                - ctest, real[c]) for c in perts])})
    seen = pd.DataFrame(seen)
    print(f"Seen perturbations (half of each condition's cells as training, {len(conds) - 1} conditions, "
          f"{args.seen_reps} splits): raw {seen['raw'].mean():.4f}, shrunk {seen['shrunk'].mean():.4f}; "
          f"shrunk better in {int((seen['shrunk'] > seen['raw']).sum())}/{args.seen_reps}")


if __name__ == "__main__":
    main()
