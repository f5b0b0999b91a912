"""Speed suite: training and sampling throughput of ``scdit.fit`` / ``predict``, metric panel.

Settings:

* ``train``: ``scdit.fit`` on a synthetic negative-binomial screen shaped like the acceptance
  case (20,000 cells × 300 genes, 25 perturbations; ``synthetic_perturbation``), run twice, for
  a few steps and for ``--speed-steps`` more: the difference gives the marginal time per
  optimizer step (cells/s at the fit's batch size), the short run the fixed overhead (setup,
  tokenizer, trainer start, validation, reference cells).
* ``sample``: ``model.predict`` of one perturbation, ``--sample-cells`` cells, with the model's
  default sampling (cells/s; includes building the AnnData).
* ``metrics_default`` / ``metrics_full``: one ``scdit.evaluate`` call on 12,000 log1p cells ×
  2,000 genes × 100 perturbations (predictions are noisy copies of the real cells): the default
  baselines, and every baseline but ``additive_shrunk`` with the split-half ceiling.

Read CPU timings with the machine's load in mind: with torch's default of one thread per core,
other processes slow each step far more than their share (``--threads 1`` is steadier).
Quick mode: 2,000 cells, tiny preset, a few steps, a small metric panel.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from anndata import AnnData

from .common import fit_model, peak_rss_mib, predict_cells

NAME = "speed"
METRICS = ("seconds", "cells_per_s", "step_ms", "overhead_s", "peak_rss_mib")
SUMMARY = METRICS


def synthetic_screen(cells: int, genes: int, perturbations: int, seed: int = 0) -> AnnData:
    """Negative-binomial screen: 5 % control cells, the rest split over the perturbations."""
    import scdit

    n_control = max(1, round(0.05 * cells))
    per = max(1, (cells - n_control) // perturbations)
    adata, _ = scdit.datasets.synthetic_perturbation(
        n_genes=genes, n_perturbations=perturbations, n_combinations=0,
        n_cells_per_condition=per, n_control=cells - per * perturbations,
        cell_types=("T0",), seed=seed)
    return adata


def panel_data(n_cells: int, n_genes: int, n_perts: int, seed: int = 0) -> AnnData:
    """log1p-like cells: a control group (1/11 of the cells) and ``n_perts`` perturbations."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    base = rng.gamma(2.0, 0.6, n_genes)
    n_ctrl = max(n_cells // 11, 10)
    per = max((n_cells - n_ctrl) // n_perts, 2)
    labels, means = ["control"] * n_ctrl, [base]
    for p in range(n_perts):
        eff = np.zeros(n_genes)
        hit = rng.choice(n_genes, n_genes // 20, replace=False)
        eff[hit] = rng.normal(0, 0.5, hit.size)
        eff[p % n_genes] = -1.5  # the target gene, named like the perturbation
        labels += [genes[p % n_genes]] * per
        means.append(base + eff)
    sizes = [n_ctrl] + [per] * n_perts
    X = np.vstack([np.maximum(m + rng.normal(0, 0.4, (c, n_genes)), 0)
                   for m, c in zip(means, sizes, strict=True)]).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    return AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))


def _row(setting: str, method: str, **values) -> dict:
    return {"setting": setting, "holdout": "-", "method": method, **values,
            "peak_rss_mib": round(peak_rss_mib(), 1)}


def run_training(seed: int, quick: bool, opts: argparse.Namespace) -> pd.DataFrame:
    """``train`` and ``sample`` rows: two fits of different length, then one prediction."""
    cells, genes, perts = (2000, 100, 5) if quick else (opts.speed_cells, 300, 25)
    adata = synthetic_screen(cells, genes, perts, seed)
    extra = max(2, opts.speed_steps if not quick else 4)
    preset = "tiny" if quick else opts.speed_preset
    short = 2
    times = []
    for steps in (short, short + extra):
        t0 = time.perf_counter()
        model = fit_model(adata, "perturbation", control="control", seed=seed, quick=quick,
                          max_steps=steps, preset=preset)
        times.append(time.perf_counter() - t0)
    step_s = max(1e-9, (times[1] - times[0]) / extra)
    batch = getattr(getattr(getattr(model, "config", None), "train", None), "batch_size", None)
    batch = min(batch or 256, adata.n_obs)
    size = f"{adata.n_obs} cells × {adata.n_vars} genes"
    rows = [_row("train", f"scdit ({preset}, {model.summary.get('precision', '?')})",
                 seconds=round(times[1], 2), cells_per_s=round(batch / step_s, 1),
                 step_ms=round(1e3 * step_s, 1),
                 overhead_s=round(max(0.0, times[0] - short * step_s), 2), data=size,
                 steps=short + extra)]
    n = 32 if quick else opts.sample_cells
    pert = sorted(set(adata.obs["perturbation"]) - {"control"})[0]
    predict_cells(model, [pert], 8, None, seed=seed, quick=quick)  # warm-up
    t0 = time.perf_counter()
    predict_cells(model, [pert], n, None, seed=seed, quick=quick)
    dt = time.perf_counter() - t0
    rows.append(_row("sample", f"scdit ({preset})", seconds=round(dt, 2),
                     cells_per_s=round(n / dt, 1), data=f"{n} cells"))
    return pd.DataFrame(rows)


def run_metrics(seed: int, quick: bool, opts: argparse.Namespace) -> pd.DataFrame:
    """``metrics_default`` and ``metrics_full`` rows: best of two ``scdit.evaluate`` calls."""
    import scdit

    cells, genes, perts = (1200, 200, 10) if quick else (12_000, 2_000, 100)
    real, train = panel_data(cells, genes, perts, seed), panel_data(cells, genes, perts, seed + 1)
    pred = real.copy()
    rng = np.random.default_rng(seed + 2)
    pred.X = np.maximum(pred.X + rng.normal(0, 0.2, pred.shape), 0).astype(np.float32)
    have = set(scdit.evaluate.ALL_BASELINES)
    panels = {"metrics_default": tuple(scdit.evaluate.BASELINES),
              "metrics_full": tuple(b for b in scdit.evaluate.ALL_BASELINES
                                    if b != "additive_shrunk" and b in have)}
    rows = []
    for setting, baselines in panels.items():
        best = np.inf
        for _ in range(1 if quick else 2):
            t0 = time.perf_counter()
            scdit.evaluate(pred, real, "perturbation", control="control", train=train,
                           baselines=baselines)
            best = min(best, time.perf_counter() - t0)
        rows.append(_row(setting, "scdit.evaluate", seconds=round(best, 3),
                         cells_per_s=round(real.n_obs / best, 1),
                         data=f"{real.n_obs} cells × {genes} genes × {perts} perturbations; "
                              f"baselines {', '.join(baselines)}"))
    return pd.DataFrame(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this suite on the runner's command line."""
    g = p.add_argument_group("speed suite")
    g.add_argument("--speed-cells", type=int, default=20_000, help="cells of the training data")
    g.add_argument("--speed-steps", type=int, default=10, help="steps between the two fits")
    g.add_argument("--speed-preset", default="small", help="DiT preset timed")
    g.add_argument("--sample-cells", type=int, default=256, help="cells generated when timing")


def units(quick: bool, opts: argparse.Namespace) -> list[tuple[str, str, Callable]]:
    """``(setting, holdout, run(seed) -> rows)`` of every unit to run."""
    return [("train+sample", "-", lambda seed: run_training(seed, quick, opts)),
            ("metrics", "-", lambda seed: run_metrics(seed, quick, opts))]
