"""Compare the tokenizers (genes, pca, scvi) on the bundled datasets.

For each dataset and tokenizer: ``scdit.fit`` with that tokenizer, then held-out prediction.

- ``glioblastoma``: ``scdit.datasets.glioblastoma_panobinostat()`` (raw counts, 300 genes); one
  patient's treated cells held out (default PW036) and predicted from that patient's control
  cells (``covariate_keys=["patient_id"]``; scVI also uses it as ``batch_key``).
- ``norman``: K562 cells of ``scdit.datasets.norman19_devel()``; the doubles whose singles are
  both measured held out (``split_combinations(seen=2)``, as in ``python -m scdit.demo``) and
  predicted from the training control cells (500 cells each).

Reported per row: the reconstruction ceiling on the validation cells (median per-gene Pearson,
MSE, Pearson Δ; from ``model.summary["ceiling"]``), held-out Pearson Δ (correlation of the
predicted and real change of mean log1p expression from the control mean, averaged over
held-out conditions) and MSE of the means, fit time, predict (sampling + decoding) time and the
peak resident memory of the process that ran it (each run is a fresh subprocess).

Usage::

    python benchmarks/tokenizers.py                          # both datasets, three tokenizers
    python benchmarks/tokenizers.py --datasets glioblastoma --max-steps 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

TOKENIZERS = ("genes", "pca", "scvi")
DATASETS = ("glioblastoma", "norman")


def _log_means(adata, key: str, label: str) -> np.ndarray:
    from scdit.data._representation import to_log1p

    X = to_log1p(adata[adata.obs[key].astype(str) == label].X)
    return np.asarray(X.mean(0)).ravel() if sp.issparse(X) else np.asarray(X).mean(0)


def delta_scores(pred, real, ctrl, key: str, labels) -> dict[str, float]:
    """Mean over ``labels`` of Pearson Δ and MSE of log1p means (control mean from ``ctrl``)."""
    from scdit.data._representation import to_log1p

    C = to_log1p(ctrl.X)
    c = np.asarray(C.mean(0)).ravel() if sp.issparse(C) else np.asarray(C).mean(0)
    pds, mses = [], []
    for lab in labels:
        p, r = _log_means(pred, key, lab), _log_means(real, key, lab)
        pds.append(float(np.corrcoef(p - c, r - c)[0, 1]))
        mses.append(float(np.mean((p - r) ** 2)))
    return {"pearson_delta": float(np.mean(pds)), "mse": float(np.mean(mses))}


def run_one(dataset: str, tokenizer: str, args) -> dict:
    """Fit and predict one (dataset, tokenizer) pair in this process."""
    import torch

    import scdit

    torch.set_num_threads(1)
    kwargs: dict = {"max_epochs": args.scvi_epochs} if tokenizer == "scvi" else {}
    if dataset == "glioblastoma":
        adata = scdit.datasets.glioblastoma_panobinostat()
        key, obs = "condition", adata.obs
        held = ((obs["patient_id"] == args.patient) & (obs[key] == "panobinostat")).to_numpy()
        ctrl = adata[((obs["patient_id"] == args.patient) & (obs[key] == "ctrl")).to_numpy()].copy()
        train, real, labels = adata[~held].copy(), adata[held].copy(), ["panobinostat"]
        fit_kw = {"covariate_keys": ["patient_id"]}
        if tokenizer == "scvi":
            kwargs["batch_key"] = "patient_id"
    else:
        from scdit.demo import CONDITION_KEY, CONTROL, load_data

        _, _, train, real = load_data(args.seed)
        key = CONDITION_KEY
        ctrl = train[train.obs[key] == CONTROL].copy()
        labels = sorted(real.obs[key].unique())
        fit_kw = {"control": CONTROL}
    t0 = time.perf_counter()
    try:
        model = scdit.fit(train, key, tokenizer=tokenizer, tokenizer_kwargs=kwargs,
                          max_steps=args.max_steps, preset=args.preset, seed=args.seed,
                          verbose=False, **fit_kw)
    except ValueError as err:  # e.g. scvi on log-normalised data: report, do not stop
        return {"dataset": dataset, "tokenizer": tokenizer, "skipped": str(err)}
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    import anndata as ad

    n = None if dataset == "glioblastoma" else 500
    parts = [model.predict(lab, n_cells=n, source=ctrl, seed=args.seed + i)
             for i, lab in enumerate(labels)]
    pred = ad.concat(parts) if len(parts) > 1 else parts[0]
    pred_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = model.summary["ceiling"]
    return {"dataset": dataset, "tokenizer": tokenizer, "values_per_cell": model.tokenizer.n_features,
            "tokens": f"{model.tokenizer.n_tokens}×{model.tokenizer.patch_size}",
            "ceiling_gene_r": c["per_gene_pearson"], "ceiling_mse": c["mse"],
            "ceiling_pearson_delta": c["pearson_delta"], **delta_scores(pred, real, ctrl, key, labels),
            "fit_s": round(fit_s, 1), "predict_s": round(pred_s, 1), "n_predicted": int(pred.n_obs),
            "peak_mb": round(peak_mb), "steps": model.summary["steps"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--tokenizers", nargs="*", default=list(TOKENIZERS))
    p.add_argument("--patient", default="PW036", help="held-out glioblastoma patient")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--scvi-epochs", type=int, default=200)
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--one", nargs=2, metavar=("DATASET", "TOKENIZER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args)), flush=True)
        return
    rows = []
    passthrough = ["--patient", args.patient, "--max-steps", str(args.max_steps),
                   "--scvi-epochs", str(args.scvi_epochs), "--preset", args.preset,
                   "--seed", str(args.seed)]
    for ds in args.datasets:
        for tok in args.tokenizers:
            out = subprocess.run([sys.executable, __file__, "--one", ds, tok, *passthrough],
                                 capture_output=True, text=True)
            lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not lines:
                print(f"{ds}/{tok} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(lines[-1][7:]))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("| dataset | tokenizer | values/cell (tokens) | ceiling gene r | ceiling MSE | "
          "ceiling Pearson Δ | held-out Pearson Δ | held-out MSE | fit s | predict s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['dataset']} | {r['tokenizer']} | n/a: {r['skipped'][:70]} |" + " |" * 8)
            continue
        print(f"| {r['dataset']} | {r['tokenizer']} | {r['values_per_cell']} ({r['tokens']}) | "
              f"{r['ceiling_gene_r']:.3f} | {r['ceiling_mse']:.4f} | {r['ceiling_pearson_delta']:.3f} | "
              f"{r['pearson_delta']:.3f} | {r['mse']:.4f} | {r['fit_s']} | {r['predict_s']} | "
              f"{r['peak_mb']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
