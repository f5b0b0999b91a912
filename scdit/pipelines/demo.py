"""End-to-end demo: predict held-out double perturbations of the bundled Norman 2019 subset.

Run ``python -m scdit.demo [--out reports/demo] [--fast] [--seed 0]`` (or ``make demo``). It

1. loads :func:`scdit.datasets.norman19_devel` and keeps the K562 cells (CRISPRa; 18 singles,
   15 doubles, 100 controls);
2. holds out the doubles whose two singles are both measured (``split_combinations(seen=2)``):
   their singles and the other doubles stay in train, together with all control cells;
3. fits :func:`scdit.fit` (:data:`FIT`: the defaults but a shorter schedule;
   ``--fast``: ``preset="tiny", max_steps=100``), straightens it with :func:`scdit.reflow`
   (:data:`REFLOW`; ``--no-reflow`` skips it) and saves the model into ``<out>/model``;
4. predicts every held-out double from the training control cells (``source=``), at least 500 cells
   each (more if it has more real ones), with the model's default sampling (one Euler step
   after reflow, Heun × 20 without);
5. scores the prediction next to the no-change, mean, additive and additive_shrunk baselines with
   :func:`scdit.evaluate` and writes ``metrics.csv``, ``summary.csv``, ``summary.json``,
   ``delta_scatter.png``, ``umap.png``, ``metric_bars.png``, ``training_curve.png``,
   ``run.json`` (settings, timings) and ``report.md`` into ``<out>``.

The exit status is non-zero if any step fails.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import api
from ..data import split_combinations
from ..datasets import norman19_devel
from ..evaluate import (
    BASELINES,
    DEFINITIONS,
    LOWER_IS_BETTER,
    baseline_predictions,
    evaluate,
    summarize,
)
from ..version import __version__

CONDITION_KEY = "perturbation"
CONTROL = "control"
CELL_TYPE = "k562"
FAST = {"preset": "tiny", "max_steps": 100}
#: Settings of the demo's :func:`scdit.fit`: the defaults, with a schedule that fits the demo's
#: few-minute budget on a 2-core CPU (the default for these 2,875 cells is 4,000 steps).
FIT = {"max_steps": 2000}
#: Settings of the demo's :func:`scdit.reflow` (``--fast``: :data:`FAST_REFLOW`).
REFLOW = {"n_pairs": 4096, "max_steps": 500}
FAST_REFLOW = {"n_pairs": 256, "max_steps": 20}
#: Metrics printed in the console table (all are in metrics.csv / summary.csv).
HEADLINE = ("pearson_delta", "pearson_delta_de", "cosine_delta", "mse", "mse_de",
            "direction_accuracy", "discrimination_l1", "energy_distance")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def load_data(seed: int = 0):
    """K562 cells of the bundled Norman subset, split into (adata, split, train, test)."""
    adata = norman19_devel()
    adata = adata[adata.obs["cell_type"].astype(str) == CELL_TYPE].copy()
    adata.obs[CONDITION_KEY] = adata.obs[CONDITION_KEY].astype(str)
    adata.obs_names_make_unique()
    split = split_combinations(adata, CONDITION_KEY, seen=2, control=CONTROL, seed=seed)
    train, test = split.subset(adata)
    return adata, split, train, test


#: Cells generated per held-out condition (at least as many as it has real cells). The metrics
#: on means compare the mean of generated cells with the real mean; with ~100 generated cells the
#: Monte-Carlo noise of that mean dominates the small effects of weak perturbations (measured
#: on the demo's model: a lower Pearson Δ with 100 cells than with 400), so the demo generates
#: more.
CELLS_PER_CONDITION = 500


def predict_held_out(model, train, test, seed: int = 0,
                     cells_per_condition: int = CELLS_PER_CONDITION) -> ad.AnnData:
    """Generate each held-out condition from the training control cells (``source=``)."""
    source = train[train.obs[CONDITION_KEY] == CONTROL].copy()
    counts = test.obs[CONDITION_KEY].value_counts()
    parts = [model.predict(cond, n_cells=max(int(counts[cond]), cells_per_condition),
                           source=source, seed=seed + i)
             for i, cond in enumerate(sorted(counts.index))]
    pred = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
    pred.obs_names_make_unique()
    return pred


def _markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    cols = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for idx, row in df.iterrows():
        cells = ["–" if pd.isna(v) else floatfmt.format(v) if isinstance(v, float) else str(v)
                 for v in row]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def run_demo(out: str | Path = "reports/demo", *, fast: bool = False, seed: int = 0,
             verbose: bool = True, fit_kwargs: dict | None = None,
             reflow: bool = True) -> dict[str, Any]:
    """Run the demo and write the report folder; return paths, tables and timings.

    ``fit_kwargs`` are passed on to :func:`scdit.fit` (after :data:`FIT` or the ``--fast``
    settings); ``reflow=False`` predicts with the fitted model itself.
    """
    from .. import plotting as pl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def log(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    t = time.perf_counter()
    adata, split, train, test = load_data(seed)
    held = sorted(test.obs[CONDITION_KEY].unique())
    times["load_split"] = time.perf_counter() - t
    log(f"demo: {adata.n_obs} K562 cells x {adata.n_vars} genes; {split.summary()}")

    kwargs = {**(FAST if fast else FIT), **(fit_kwargs or {})}
    t = time.perf_counter()
    model = api.fit(train, condition_key=CONDITION_KEY, control=CONTROL, seed=seed,
                      verbose=verbose, **kwargs)
    times["fit"] = time.perf_counter() - t
    fitted = model
    if reflow:
        t = time.perf_counter()
        model = api.reflow(model, seed=seed, verbose=verbose, **(FAST_REFLOW if fast else REFLOW))
        times["reflow"] = time.perf_counter() - t
    model.save(out / "model", overwrite=True)

    t = time.perf_counter()
    pred = predict_held_out(model, train, test, seed=seed)
    times["predict"] = time.perf_counter() - t
    values = pred.X.data if sp.issparse(pred.X) else np.asarray(pred.X)
    if not np.isfinite(values).all():
        raise RuntimeError("The prediction contains non-finite values.")

    t = time.perf_counter()
    real = ad.concat([test, train[train.obs[CONDITION_KEY] == CONTROL]], merge="same")
    df = evaluate(pred, real, CONDITION_KEY, control=CONTROL, train=train, seed=seed,
                  baselines=(*BASELINES, "additive_shrunk"))
    summary = summarize(df)
    times["evaluate"] = time.perf_counter() - t
    df.to_csv(out / "metrics.csv", index=False)
    summary.index.name = "method"
    summary.to_csv(out / "summary.csv")
    (out / "summary.json").write_text(json.dumps(
        _jsonable({m: summary.loc[m].to_dict() for m in summary.index}), indent=2))
    if summary.loc["scdit"].isna().all():
        raise RuntimeError("Every scdit metric is NaN.")

    t = time.perf_counter()
    additive = baseline_predictions(real, CONDITION_KEY, control=CONTROL, train=train,
                                    conditions=held, baselines=("additive",))["additive"]
    pl.delta_scatter(pred, real, CONDITION_KEY, CONTROL, conditions=held, baseline=additive,
                     baseline_label="additive", label_genes=3, ncols=min(5, len(held)),
                     save=out / "delta_scatter.png")
    pl.embedding(real, pred, CONDITION_KEY, seed=seed, save=out / "umap.png")
    pl.metric_bars(df, save=out / "metric_bars.png")
    pl.training_curve(fitted, save=out / "training_curve.png")
    times["plots"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t_all

    table = summary.T  # metrics x methods, methods side by side
    table.index.name = "metric"
    settings = {
        "dataset": "norman19_devel (K562)", "split": "split_combinations(seen=2)",
        "held_out": held, "n_train_cells": int(train.n_obs), "n_test_cells": int(test.n_obs),
        "n_genes": int(adata.n_vars), "seed": seed, "fast": fast, "fit_kwargs": kwargs,
        "preset": kwargs.get("preset", "small"), "steps": model.summary.get("steps"),
        "best_val_loss": model.summary.get("best_val_loss"),
        "n_params": model.summary.get("n_params"),
        "precision": model.summary.get("precision"),
        "reflow": ({**(FAST_REFLOW if fast else REFLOW),
                    "sampling_steps": model.summary.get("reflow", {}).get("sampling_steps")}
                   if reflow else None),
        "python": platform.python_version(), "scdit": __version__,
        "machine": f"{platform.machine()}, {_cpus()} CPU(s)",
    }
    (out / "run.json").write_text(json.dumps(
        _jsonable({"settings": settings, "seconds": {k: round(v, 1) for k, v in times.items()}}),
        indent=2))
    _write_report(out, table, settings, times)
    log("\n" + _console_table(table))
    log("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    log(f"report: {out / 'report.md'}")
    return {"out": out, "metrics": df, "summary": summary, "table": table, "times": times,
            "settings": settings, "model": model, "pred": pred}


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def _console_table(table: pd.DataFrame) -> str:
    show = table.loc[[m for m in HEADLINE if m in table.index]]
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        return ("mean over held-out doubles (↑ higher is better, ↓ lower):\n"
                + show.rename(index=lambda m: f"{m} {_arrow(m)}").to_string())


def _arrow(metric: str) -> str:
    return "↓" if metric in LOWER_IS_BETTER else "↑"


def _write_report(out: Path, table: pd.DataFrame, settings: dict, times: dict) -> None:
    shown = table.rename(index=lambda m: f"{m} {_arrow(m)}")
    lines = [
        "# scdit demo: held-out double perturbations (Norman 2019, K562)",
        "",
        f"Held-out doubles (both singles seen in training): {', '.join(settings['held_out'])}. "
        f"{settings['n_train_cells']} training cells, {settings['n_test_cells']} test cells, "
        f"{settings['n_genes']} genes. Predictions start from the training control cells.",
        "",
        "## Metrics (mean over held-out doubles)",
        "",
        "↑ higher is better, ↓ lower is better; – : not defined for that method "
        "(e.g. correlations of the no-change baseline). Per-condition values: `metrics.csv`.",
        "",
        _markdown_table(shown),
        "",
        "## Predicted vs real Δ (scdit in blue, additive baseline in orange)",
        "",
        "![delta scatter](delta_scatter.png)",
        "",
        "## Real vs generated cells (UMAP)",
        "",
        "![umap](umap.png)",
        "",
        "## Metrics per method",
        "",
        "![metric bars](metric_bars.png)",
        "",
        "## Training curve",
        "",
        "![training curve](training_curve.png)",
        "",
        "## Settings",
        "",
        *[f"- **{k}**: {v}" for k, v in settings.items()],
        "",
        "## Wall time (seconds)",
        "",
        *[f"- {k}: {v:.1f}" for k, v in times.items()],
        "",
        "## Metric definitions",
        "",
        *[f"- **{k}**: {v}" for k, v in DEFINITIONS.items()],
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m scdit.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="reports/demo", help="report folder (default reports/demo)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny model, 100 steps (a smoke test, not a result)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reflow", action="store_true",
                        help="predict with the fitted model (Heun x 20) instead of its reflow")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    try:
        run_demo(args.out, fast=args.fast, seed=args.seed, verbose=not args.quiet,
                 reflow=not args.no_reflow)
    except Exception:  # noqa: BLE001 - report and exit non-zero
        traceback.print_exc()
        print("demo: FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
