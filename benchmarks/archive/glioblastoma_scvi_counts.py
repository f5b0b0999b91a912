"""Counts from the scVI tokenizer on a held-out patient of the bundled glioblastoma data.

For each held-out patient P of ``scdit.datasets.glioblastoma_panobinostat()`` (5 patients,
``ctrl`` / ``panobinostat``, raw counts, 300 genes): train on every cell except P's treated cells
(``covariate_keys=["patient_id"]``, scVI ``batch_key="patient_id"`` unless ``--no-batch``), predict
``"panobinostat"`` from P's control cells (``predict(source=...)``: their patient and library
sizes are carried over) and compare the generated counts with P's real treated cells:

- library ratio: mean total counts of the generated cells / of the real treated cells;
- zero-fraction r: Pearson correlation over genes of the per-gene fraction of zero counts;
- Pearson Δ: correlation of the predicted and real change of mean log1p expression from P's
  control cells.

The same figures for P's control cells themselves (``control as is``) show how much treatment
changes them. Usage::

    python benchmarks/glioblastoma_scvi_counts.py                 # all five patients
    python benchmarks/glioblastoma_scvi_counts.py --patients PW030 --max-steps 500 --json out.json
    python benchmarks/glioblastoma_scvi_counts.py --library generated   # library as a feature
    python benchmarks/glioblastoma_scvi_counts.py --no-batch            # scVI without batch_key
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import scdit  # noqa: E402
from scdit.data._representation import counts_to_log1p  # noqa: E402

PATIENT, TREATED, CONTROL = "patient_id", "panobinostat", "ctrl"


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def count_metrics(pred, real, ctrl) -> dict[str, float]:
    """Library ratio, zero-fraction correlation and Pearson Δ of count matrices (cells × genes)."""
    P, R, C = _dense(pred), _dense(real), _dense(ctrl)
    zp, zr = (P == 0).mean(0), (R == 0).mean(0)
    ok = (zp.std() > 0) and (zr.std() > 0)
    lp, lr, lc = (np.asarray(counts_to_log1p(sp.csr_matrix(M)).mean(0)).ravel() for M in (P, R, C))
    return {"library_ratio": float(P.sum(1).mean() / R.sum(1).mean()),
            "median_library_ratio": float(np.median(P.sum(1)) / np.median(R.sum(1))),
            "zero_fraction_r": float(np.corrcoef(zp, zr)[0, 1]) if ok else float("nan"),
            "pearson_delta": float(np.corrcoef(lp - lc, lr - lc)[0, 1])}


def run_patient(adata, patient: str, tokenizer: str, args) -> dict:
    """Fit without ``patient``'s treated cells, predict them from its control cells, score."""
    obs = adata.obs
    held = (obs[PATIENT] == patient) & (obs["condition"] == TREATED)
    source = adata[(obs[PATIENT] == patient) & (obs["condition"] == CONTROL)].copy()
    real = adata[held.to_numpy()]
    train = adata[~held.to_numpy()].copy()
    kwargs = ({"batch_key": None if args.no_batch else PATIENT, "max_epochs": args.scvi_epochs,
               "library": args.library}
              if tokenizer == "scvi" else {})
    t0 = time.perf_counter()
    model = scdit.fit(train, "condition", covariate_keys=[PATIENT], tokenizer=tokenizer,
                      tokenizer_kwargs=kwargs, max_steps=args.max_steps, seed=args.seed,
                      source=args.source, verbose=args.verbose)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(TREATED, source=source, seed=args.seed)
    pred_s = time.perf_counter() - t0
    row = {"patient": patient, "tokenizer": tokenizer, "library": args.library,
           "scvi_batch_key": None if args.no_batch else PATIENT,
           "source": model.config.flow.source, "seed": args.seed, "fit_s": round(fit_s, 1),
           "predict_s": round(pred_s, 1), **count_metrics(pred.X, real.X, source.X),
           "ceiling": model.summary["ceiling"], "steps": model.summary["steps"]}
    for mode in args.calibrate:  # the same model, drift-calibrated (control source only)
        cal = model.predict(TREATED, source=source, seed=args.seed, calibrate=mode)
        row[f"calibrate_{mode}"] = count_metrics(cal.X, real.X, source.X)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", nargs="*", default=None, help="held-out patients (default all)")
    p.add_argument("--tokenizers", nargs="*", default=["scvi"], help="scvi, genes, pca")
    p.add_argument("--max-steps", type=int, default=None, help="DiT steps (default: automatic)")
    p.add_argument("--scvi-epochs", type=int, default=None, help="scVI epochs (default: scvi rule)")
    p.add_argument("--source", default="auto", choices=["auto", "noise", "control"],
                   help="flow source (auto = fit's default: control with covariates)")
    p.add_argument("--library", default="source", choices=["source", "generated"],
                   help="scVI library of generated counts: the source cell's, or generated")
    p.add_argument("--no-batch", action="store_true",
                   help="scVI without batch_key=patient_id (the flow still conditions on it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibrate", nargs="*", default=[], choices=["mean", "cell"],
                   help="also score drift-calibrated predictions (control source)")
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    adata = scdit.datasets.glioblastoma_panobinostat()
    patients = args.patients or sorted(adata.obs[PATIENT].unique())
    rows = []
    for patient in patients:
        obs = adata.obs
        real = adata[((obs[PATIENT] == patient) & (obs["condition"] == TREATED)).to_numpy()]
        ctrl = adata[((obs[PATIENT] == patient) & (obs["condition"] == CONTROL)).to_numpy()]
        rows.append({"patient": patient, "tokenizer": "control as is",
                     **count_metrics(ctrl.X, real.X, ctrl.X)})
        for tok in args.tokenizers:
            rows.append(run_patient(adata, patient, tok, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "ceiling"}), flush=True)
    print()
    print("| held-out patient | predictor | library ratio (mean) | library ratio (median) | "
          "zero-fraction r | Pearson Δ | fit s | predict s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        pd_ = "—" if r["tokenizer"] == "control as is" else f"{r['pearson_delta']:.3f}"
        print(f"| {r['patient']} | {r['tokenizer']} | {r['library_ratio']:.3f} | "
              f"{r['median_library_ratio']:.3f} | {r['zero_fraction_r']:.3f} | {pd_} | "
              f"{r.get('fit_s', '—')} | {r.get('predict_s', '—')} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
