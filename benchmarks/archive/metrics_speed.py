"""Time the full ``scdit.evaluate`` metric panel on a large synthetic benchmark.

Default size: 12,000 real cells × 2,000 genes × 100 perturbations (plus control cells), a
training set of the same shape, and predictions built as noisy copies of the real cells. Every
metric except DE *tests* (DES) is computed, for the prediction and every baseline including the
linear baseline and the split-half ceiling. Target: < 10 s on a 2-core CPU.

Run: ``python benchmarks/metrics_speed.py [--cells 12000 --genes 2000 --perts 100 --repeat 2]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from anndata import AnnData


def make_data(n_cells: int, n_genes: int, n_perts: int, seed: int = 0) -> AnnData:
    """log1p-like cells: a control group (1/11 of the cells) and ``n_perts`` perturbations."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    base = rng.gamma(2.0, 0.6, n_genes)
    n_ctrl = max(n_cells // 11, 10)
    per = max((n_cells - n_ctrl) // n_perts, 2)
    labels = ["control"] * n_ctrl
    means = [base]
    for p in range(n_perts):
        eff = np.zeros(n_genes)
        hit = rng.choice(n_genes, n_genes // 20, replace=False)
        eff[hit] = rng.normal(0, 0.5, hit.size)
        eff[p % n_genes] = -1.5  # the target gene, named like the perturbation
        labels += [genes[p % n_genes]] * per
        means.append(base + eff)
    counts = [n_ctrl] + [per] * n_perts
    X = np.vstack([np.maximum(m + rng.normal(0, 0.4, (c, n_genes)), 0) for m, c in
                   zip(means, counts, strict=True)]).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    return AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=12_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--perts", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", help="write the timings here")
    args = p.parse_args()

    from scdit.evaluate import evaluate, summarize

    t0 = time.perf_counter()
    real = make_data(args.cells, args.genes, args.perts, seed=0)
    train = make_data(args.cells, args.genes, args.perts, seed=1)
    rng = np.random.default_rng(2)
    pred = real.copy()
    pred.X = np.maximum(pred.X + rng.normal(0, 0.2, pred.shape), 0).astype(np.float32)
    t_data = time.perf_counter() - t0
    rows = []
    panels = {
        "default (no_change, mean, additive)": ("no_change", "mean", "additive"),
        "full (+ mean_cell_weighted, linear, ceiling)": (
            "no_change", "mean", "mean_cell_weighted", "additive", "linear", "ceiling"),
    }
    for label, baselines in panels.items():
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            df = evaluate(pred, real, "perturbation", control="control", train=train,
                          baselines=baselines)
            times.append(time.perf_counter() - t)
        rows.append({"panel": label, "best_s": min(times), "mean_s": float(np.mean(times)),
                     "n_methods": df["method"].nunique(), "n_metrics": df["metric"].nunique(),
                     "n_rows": len(df)})
    print(f"data: {real.n_obs} real cells × {real.n_vars} genes × {args.perts} perturbations "
          f"(+ {train.n_obs} training cells, {pred.n_obs} predicted); built in {t_data:.1f} s")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print()
    print(summarize(df).T.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
