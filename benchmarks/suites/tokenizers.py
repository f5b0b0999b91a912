"""Tokenizer suite: the ``genes``, ``pca`` and ``scvi`` tokenizers on the bundled datasets.

For each dataset and tokenizer, ``scdit.fit`` with that tokenizer, then held-out prediction:

* ``glioblastoma``: ``scdit.datasets.glioblastoma_panobinostat()`` (raw counts, 300 genes); the
  treated cells of one patient (``--tokenizer-patient``, default PW036) held out and predicted
  from that patient's control cells (covariate ``patient_id``, also scVI's ``batch_key``).
* ``norman``: K562 cells of ``scdit.datasets.norman19_devel()``; the doubles whose singles were
  both seen held out (``split_combinations(seen=2)``, the demo split), 500 cells each from the
  training control cells. The data are log-normalised, so ``scvi`` refuses them (row
  ``skipped``).

Columns: the reconstruction ceiling stored by ``fit`` (``model.summary["ceiling"]``), held-out
Pearson Δ and MSE from ``scdit.evaluate``, fit and predict seconds and the peak memory of the
subprocess that ran the row (each row runs in a fresh process). Full mode: small preset, 500
steps, 200 scVI epochs (``--tokenizer-steps``, ``--scvi-epochs``). Quick mode: glioblastoma only,
tiny fits, 2 scVI epochs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import pandas as pd

from .common import fit_model, norman_doubles_split, peak_rss_mib, predict_cells

NAME = "tokenizers"
TOKENIZERS = ("genes", "pca", "scvi")
DATASETS = ("glioblastoma", "norman")
METRICS = ("ceiling_gene_r", "ceiling_mse", "ceiling_pearson_delta", "pearson_delta", "mse",
           "fit_s", "predict_s", "peak_rss_mib")
SUMMARY = ("ceiling_pearson_delta", "pearson_delta", "mse", "fit_s", "peak_rss_mib")


def _data(dataset: str, patient: str):
    """``(train, real, source, key, control, covariate_keys, conditions, n_cells)``."""
    import scdit
    from scdit.splits import split_covariate_context

    if dataset == "glioblastoma":
        a = scdit.datasets.glioblastoma_panobinostat()
        split = split_covariate_context(a, "condition", "patient_id", context=patient,
                                        control="ctrl")
        train, test = split.subset(a)
        source = a[a.obs_names.isin(split.params["source_obs_names"])].copy()
        key, control, covs, n = "condition", "ctrl", ("patient_id",), None
    else:
        train, test = norman_doubles_split()
        key, control, covs, n = "perturbation", "control", (), 500
        source = train[train.obs[key] == control].copy()
    real = ad.concat([test, source], merge="same")
    real.obs_names_make_unique()
    conds = sorted(set(test.obs[key].astype(str)))
    return train, real, source, key, control, covs, conds, n


def run_row(dataset: str, tokenizer: str, seed: int, quick: bool, opts: dict) -> dict:
    """Fit and predict one (dataset, tokenizer) pair in this process; one result row."""
    import torch

    import scdit

    torch.set_num_threads(opts.get("threads") or 1)
    train, real, source, key, control, covs, conds, n = _data(dataset, opts["patient"])
    options: dict = {}
    if tokenizer == "scvi":
        options["max_epochs"] = 2 if quick else opts["scvi_epochs"]
        if covs:
            options["batch_key"] = covs[0]
    row = {"setting": dataset, "holdout": opts["patient"] if covs else "seen2",
           "method": tokenizer, "seed": seed}
    t0 = time.perf_counter()
    try:
        model = fit_model(train, key, control=control, seed=seed, quick=quick,
                          covariate_keys=covs, tokenizer=tokenizer,
                          tokenizer_options=options or None,
                          max_steps=None if quick else opts["steps"],
                          preset=None if quick else opts["preset"])
    except ValueError as err:  # e.g. scvi on log-normalised data: report, do not stop
        return {**row, "skipped": str(err).splitlines()[0][:200]}
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_cells = n or {c: int((real.obs[key] == c).sum()) for c in conds}
    pred = predict_cells(model, conds, n_cells, source, seed=seed, quick=quick)
    predict_s = time.perf_counter() - t0
    df = scdit.evaluate(pred, real, key, control=control, train=train,
                        covariate_key=covs[0] if covs else None, baselines=(), seed=seed)
    s = scdit.evaluate.summarize(df).loc["scdit"]
    c = model.summary.get("ceiling") or {}
    tok = model.tokenizer
    return {**row, "values_per_cell": getattr(tok, "n_features", None),
            "tokens": f"{getattr(tok, 'n_tokens', '?')}×{getattr(tok, 'patch_size', '?')}",
            "ceiling_gene_r": c.get("per_gene_pearson"), "ceiling_mse": c.get("mse"),
            "ceiling_pearson_delta": c.get("pearson_delta"),
            "pearson_delta": float(s["pearson_delta"]), "mse": float(s["mse"]),
            "fit_s": round(fit_s, 1), "predict_s": round(predict_s, 1),
            "n_predicted": int(pred.n_obs), "steps": model.summary.get("steps"),
            "peak_rss_mib": round(peak_rss_mib(), 1)}


def _subprocess_row(dataset: str, tokenizer: str, seed: int, quick: bool,
                    opts: argparse.Namespace) -> pd.DataFrame:
    """Run :func:`run_row` in a fresh Python process (its own peak memory)."""
    child = {"patient": opts.tokenizer_patient, "steps": opts.tokenizer_steps,
             "preset": opts.tokenizer_preset, "scvi_epochs": opts.scvi_epochs,
             "threads": opts.threads}
    code = ("import json, sys, warnings; warnings.filterwarnings('ignore'); "
            f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
            "from suites.tokenizers import run_row; "
            f"print('RESULT ' + json.dumps(run_row({dataset!r}, {tokenizer!r}, {seed}, "
            f"{quick}, {child!r})), flush=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{dataset}/{tokenizer} failed:\n{out.stderr[-3000:]}")
    return pd.DataFrame([json.loads(lines[-1][len("RESULT "):])])


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this suite on the runner's command line."""
    g = p.add_argument_group("tokenizers suite")
    g.add_argument("--tokenizers", nargs="+", choices=TOKENIZERS, help="default: all three")
    g.add_argument("--tokenizer-datasets", nargs="+", choices=DATASETS,
                   help="default: both (quick: glioblastoma)")
    g.add_argument("--tokenizer-patient", default="PW036", help="held-out glioblastoma patient")
    g.add_argument("--tokenizer-steps", type=int, default=500, help="DiT steps per fit")
    g.add_argument("--tokenizer-preset", default="small", help="DiT preset")
    g.add_argument("--scvi-epochs", type=int, default=200, help="scVI training epochs")


def units(quick: bool, opts: argparse.Namespace) -> list[tuple[str, str, Callable]]:
    """``(setting, holdout, run(seed) -> rows)`` of every unit to run."""
    datasets = opts.tokenizer_datasets or (("glioblastoma",) if quick else DATASETS)
    toks = opts.tokenizers or TOKENIZERS
    return [(ds, tok, lambda seed, ds=ds, tok=tok: _subprocess_row(ds, tok, seed, quick, opts))
            for ds in datasets for tok in toks]
