"""Seen perturbations, held-out cells: ``scdit.fit`` with defaults vs the baselines.

The foundation acceptance case: a count matrix (default: synthetic, 20,000 cells × 300 genes,
25 CRISPR-like perturbations, one cell type; or ``--data your.h5ad``), 20% of each
perturbation's cells held out, ``scdit.fit`` with default settings on the rest, ``predict`` of
every perturbation from the training control cells, scored with ``scdit.evaluate`` against the
held-out real cells. Prints the fit time and a metric table (scdit, no_change, mean).

Run: ``python benchmarks/seen_perturbations.py [--data x.h5ad --condition-key perturbation]``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import anndata as ad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="h5ad file (default: synthetic 20k × 300 counts)")
    p.add_argument("--condition-key", default="perturbation")
    p.add_argument("--control", default=None)
    p.add_argument("--max-steps", type=int, default=None, help="default: scdit's automatic length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the summary table here")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    import scdit
    from scdit.evaluate import summarize
    from scdit.splits import random_cells

    if args.data:
        adata = ad.read_h5ad(args.data)
    else:
        adata, _ = scdit.datasets.synthetic_perturbation(
            n_genes=300, n_perturbations=25, n_combinations=0, n_cells_per_condition=760,
            n_control=1000, cell_types=("K562",), seed=args.seed)
    print(f"data: {adata.n_obs} cells × {adata.n_vars} genes, "
          f"{adata.obs[args.condition_key].nunique()} conditions")
    split = random_cells(adata, args.condition_key, fraction=0.2, control=args.control,
                         seed=args.seed)
    train, test = split.subset(adata)
    t0 = time.perf_counter()
    model = scdit.fit(train, args.condition_key, control=args.control, max_steps=args.max_steps,
                      seed=args.seed, verbose=False)
    fit_s = time.perf_counter() - t0
    control = model.vocab.control
    ctrl = train[train.obs[args.condition_key] == control]
    conds = sorted(set(test.obs[args.condition_key]) - {control})
    t0 = time.perf_counter()
    pred = ad.concat([model.predict(c, n_cells=int((test.obs[args.condition_key] == c).sum()),
                                    source=ctrl, seed=args.seed) for c in conds])
    pred_s = time.perf_counter() - t0
    df = scdit.evaluate(pred, ad.concat([test, ctrl]), args.condition_key, control=control,
                        train=train, baselines=("no_change", "mean"))
    table = summarize(df)
    print(f"fit: {fit_s:.0f} s ({model.summary['steps']} steps, {model.summary['precision']}); "
          f"predict: {pred_s:.0f} s for {pred.n_obs} cells")
    print(table.round(3).to_string())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"fit_seconds": fit_s, "predict_seconds": pred_s,
                       "steps": model.summary["steps"], "summary": table.to_dict()}, fh, indent=2)


if __name__ == "__main__":
    main()
