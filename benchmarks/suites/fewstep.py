"""Few-step sampling suite: quality and speed of 1, 2, 4 and 8 Euler steps vs the default solver.

Settings (``--fewstep-settings``):

* ``norman_doubles``: the bundled Norman K562 doubles whose two singles were both seen (the demo
  split), predicted from the training control cells (as in the ``quality`` suite).
* ``glioblastoma_patients``: one held-out patient's panobinostat cells predicted from that
  patient's control cells (``--fewstep-patients``, default PW036; as in the ``quality`` suite).

Per unit and seed, ``scdit.fit`` with its defaults (``--max-steps`` shortens it) is fitted once;
then ``predict`` with the model's default sampling (row ``scdit``, Heun 20 steps) and with
Euler 1, 2, 4 and 8 steps (rows ``scdit_euler1`` ...), each scored with ``scdit.evaluate``
against the held-out cells (Pearson Δ, top-20-DE Pearson Δ, energy distance) and timed (cells/s
of the whole ``predict`` calls). When this scdit has ``scdit.reflow``, the fitted model is
straightened with it (its defaults, or ``--reflow-steps`` / ``--reflow-pairs``; timed:
``reflow_s``) and the straightened model is scored the same way at
its default sampling (row ``scdit_reflow``) and at Euler 1, 2, 4 and 8 steps.

With ``--cellflow-venv PATH`` (a virtualenv with ``cellflow-tools``; see
``benchmarks/peers/README.md``), Norman doubles also get a ``cellflow`` row: CellFlow fitted
briefly (``--cellflow-iterations``, reduced network) on the same split by
``peers/cellflow_predict_speed.py`` in a subprocess, its ``predict`` timed for the same number
of cells (after one untimed call that compiles), its decoded cells (PCA reconstruction,
negative values clipped at 0: ``peer_negative_clipped`` is their share) scored the same way.

Quick mode: tiny fits of a few steps (one unit per setting, two held-out conditions), the
default solver with few steps, a short reflow, CellFlow 20 iterations: it checks the pipeline,
not quality.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .common import QUICK_SAMPLING_STEPS, QUICK_STEPS, fit_model, predict_cells
from .quality import settings as quality_settings

NAME = "fewstep"
METRICS = ("pearson_delta", "pearson_delta_de", "energy_distance", "cells_per_s", "predict_s",
           "fit_s", "reflow_s")
SUMMARY = ("pearson_delta", "pearson_delta_de", "energy_distance", "cells_per_s")
SETTINGS = ("norman_doubles", "glioblastoma_patients")
EULER_STEPS = (1, 2, 4, 8)
PEERS = Path(__file__).resolve().parents[1] / "peers"


def _score(cells: ad.AnnData, task, setting, method: str, seed: int) -> dict:
    """Pearson Δ (all genes, top-20 DE) and energy distance of ``cells`` (means over the
    held-out conditions)."""
    import scdit

    df = scdit.evaluate(cells, task.real, setting.condition_key, control=setting.control,
                        train=task.train, covariate_key=setting.covariate_key, seed=seed,
                        baselines=(), method_name=method)
    table = scdit.evaluate.summarize(df[df["method"] == method])
    row = table.loc[method]
    return {m: float(row[m]) for m in ("pearson_delta", "pearson_delta_de", "energy_distance")
            if m in row.index}


def _variants(model, task, setting, seed: int, quick: bool, prefix: str) -> list[dict]:
    """Rows of one model: its default sampling and Euler 1/2/4/8 steps."""
    flow = getattr(getattr(model, "config", None), "flow", None)
    conds = sorted(task.n_cells)
    total = sum(task.n_cells[c] for c in conds)
    predict_cells(model, conds[:1], 8, task.source, seed=seed, quick=quick,
                  sampling={"steps": 1, "solver": "euler"})  # warm-up, untimed
    rows = []
    for k in (None, *EULER_STEPS):
        default = {"steps": QUICK_SAMPLING_STEPS} if quick else {}  # quick: few default steps
        sampling = default if k is None else {"steps": k, "solver": "euler"}
        method = prefix if k is None else f"{prefix}_euler{k}"
        t0 = time.perf_counter()
        cells = predict_cells(model, conds, task.n_cells, task.source, seed=seed, quick=quick,
                              sampling=sampling)
        dt = time.perf_counter() - t0
        rows.append({"method": method, **_score(cells, task, setting, method, seed),
                     "cells_per_s": round(total / dt, 1), "predict_s": round(dt, 2),
                     "solver": "euler" if k else getattr(flow, "solver", "?"),
                     "sampling_steps": k or sampling.get("steps", getattr(flow, "steps", np.nan)),
                     "cells": total})
    return rows


def _reflow(model, train: ad.AnnData, seed: int, quick: bool, opts: argparse.Namespace):
    """``scdit.reflow`` with the arguments its signature takes: the training cells when it
    takes data, ``seed``, ``verbose=False``, and ``--reflow-steps`` / ``--reflow-pairs``
    (quick mode: :data:`QUICK_STEPS` steps, 64 pairs) where given."""
    import scdit

    fn = scdit.reflow
    params = inspect.signature(fn).parameters
    positional = [p for p in params.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args = (model, train) if len(positional) > 1 else (model,)
    kw: dict = {}
    if "verbose" in params:
        kw["verbose"] = False
    if "seed" in params:
        kw["seed"] = seed
    steps = QUICK_STEPS if quick else getattr(opts, "reflow_steps", None)
    if steps is not None and "max_steps" in params:
        kw["max_steps"] = steps
    pairs = 64 if quick else getattr(opts, "reflow_pairs", None)
    if pairs is not None and "n_pairs" in params:
        kw["n_pairs"] = pairs
    return fn(*args, **kw)


def run_unit(name: str, holdout: str, seed: int, quick: bool,
             opts: argparse.Namespace) -> pd.DataFrame:
    """Fit once, score the default and few-step sampling (and reflow, CellFlow where there)."""
    import scdit

    setting = quality_settings()[name]
    task = setting.make(holdout, quick, opts)
    if quick:  # two held-out conditions are enough to check the pipeline
        task.n_cells = {c: task.n_cells[c] for c in sorted(task.n_cells)[:2]}
    cov = setting.covariate_key
    t0 = time.perf_counter()
    model = fit_model(task.train, setting.condition_key, control=setting.control, seed=seed,
                      quick=quick, covariate_keys=(cov,) if cov else (),
                      max_steps=getattr(opts, "max_steps", None))
    fit_s = time.perf_counter() - t0
    rows = _variants(model, task, setting, seed, quick, "scdit")
    for r in rows:
        r["fit_s"] = round(fit_s, 1)
    if getattr(scdit, "reflow", None) is None:
        print("fewstep: scdit.reflow not found, reflow rows skipped", flush=True)
    else:
        t0 = time.perf_counter()
        straight = _reflow(model, task.train, seed, quick, opts)
        reflow_s = time.perf_counter() - t0
        for r in _variants(straight, task, setting, seed, quick, "scdit_reflow"):
            rows.append({**r, "fit_s": round(fit_s, 1), "reflow_s": round(reflow_s, 1)})
    if name == "norman_doubles" and getattr(opts, "cellflow_venv", None):
        row = cellflow_row(task, setting, seed, quick, opts)
        if row is not None:
            rows.append(row)
    out = pd.DataFrame(rows)
    out.insert(0, "holdout", holdout)
    out.insert(0, "setting", name)
    out["n_conditions"] = len(task.n_cells)
    out["train_steps"] = np.where(out["method"].str.startswith("scdit"),
                                  model.summary.get("steps", np.nan), np.nan)
    out["train_precision"] = np.where(out["method"].str.startswith("scdit"),
                                      model.summary.get("precision", "?"), "-")
    return out


def cellflow_row(task, setting, seed: int, quick: bool, opts: argparse.Namespace) -> dict | None:
    """CellFlow fitted on the same split, its ``predict`` timed for the same cells, scored.

    Runs ``peers/cellflow_predict_speed.py`` with the venv's Python; ``None`` (with a message)
    when that fails.
    """
    import torch

    python = Path(opts.cellflow_venv) / "bin" / "python"
    if not python.exists():
        print(f"fewstep: no {python}; cellflow row skipped", flush=True)
        return None
    key = setting.condition_key
    with tempfile.TemporaryDirectory(prefix="scdit_cellflow_") as tmp:
        work = Path(tmp)
        cells = ad.concat([task.train, task.real[~task.real.obs_names.isin(task.train.obs_names)]],
                          merge="same")
        cells = ad.AnnData(X=cells.X, obs=cells.obs[[key]].astype(str),
                           var=pd.DataFrame(index=cells.var_names))
        cells.write_h5ad(work / "cells.h5ad")
        test = [n for n in task.real.obs_names if n not in set(task.train.obs_names)]
        (work / "split.json").write_text(json.dumps({"train": list(task.train.obs_names),
                                                     "test": test}))
        job = {"data": str(work / "cells.h5ad"), "split": str(work / "split.json"),
               "condition_key": key, "control": setting.control, "separator": "+",
               "n_cells": task.n_cells, "num_iterations": 20 if quick else opts.cellflow_iterations,
               "batch_size": 1024, "n_comps": 50, "seed": seed, "out": str(work / "pred.h5ad")}
        (work / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
        threads = torch.get_num_threads()
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1" + (
            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            if threads == 1 else "")
        t0 = time.perf_counter()
        proc = subprocess.run([str(python), str(PEERS / "cellflow_predict_speed.py"),
                               str(work / "job.json")], capture_output=True, text=True, env=env,
                              timeout=opts.cellflow_timeout)
        if proc.returncode != 0:
            print(f"fewstep: CellFlow failed (exit {proc.returncode}); cellflow row skipped:\n"
                  f"{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
            return None
        info = json.loads((work / "pred.h5ad.json").read_text())
        pred = ad.read_h5ad(work / "pred.h5ad")
        negative = float(np.mean(np.asarray(pred.X) < 0))
        pred.X = np.maximum(np.asarray(pred.X), 0.0)  # PCA decoding is unclipped; evaluate
        wall = time.perf_counter() - t0
    return {"method": "cellflow", **_score(pred, task, setting, "cellflow", seed),
            "cells_per_s": round(info["cells_per_s"], 1),
            "predict_s": round(info["seconds_predict"], 2),
            "predict_first_s": round(info["seconds_predict_first"], 2),
            "fit_s": round(info["seconds_train"], 1), "solver": "tsit5 (adaptive)",
            "sampling_steps": np.nan, "cells": info["cells_predicted"],
            "peer_iterations": info["num_iterations"], "peer_negative_clipped": round(negative, 3), "peer_wall_s": round(wall, 1),
            "peer_version": f"cellflow-tools {info['cellflow_version']}, jax "
                            f"{info['jax_version']}"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this suite on the runner's command line (``--max-steps`` is shared with the
    quality suite)."""
    g = p.add_argument_group("fewstep suite")
    g.add_argument("--fewstep-settings", nargs="+", choices=SETTINGS, metavar="NAME",
                   help=f"settings (default: all; {', '.join(SETTINGS)})")
    g.add_argument("--fewstep-patients", nargs="+", default=["PW036"], metavar="PATIENT",
                   help="held-out glioblastoma patients (default: PW036)")
    g.add_argument("--reflow-steps", type=int, metavar="N",
                   help="fine-tuning steps of scdit.reflow (default: its own; quick mode 40)")
    g.add_argument("--reflow-pairs", type=int, metavar="N",
                   help="pairs drawn by scdit.reflow (default: its own; quick mode 64)")
    g.add_argument("--cellflow-venv", metavar="PATH",
                   help="virtualenv with cellflow-tools: add CellFlow's row on Norman doubles")
    g.add_argument("--cellflow-iterations", type=int, default=2000,
                   help="CellFlow training iterations (default 2000; quick mode 20)")
    g.add_argument("--cellflow-timeout", type=int, default=3600,
                   help="seconds before the CellFlow subprocess is stopped")


def units(quick: bool, opts: argparse.Namespace) -> list[tuple[str, str, Callable]]:
    """``(setting, holdout, run(seed) -> rows)`` of every unit to run."""
    out = []
    for name in opts.fewstep_settings or SETTINGS:
        holdouts = ["seen2"] if name == "norman_doubles" else (
            ["PW036"] if quick else list(opts.fewstep_patients))
        for h in holdouts:
            out.append((name, h, lambda seed, n=name, h=h: run_unit(n, h, seed, quick, opts)))
    return out
