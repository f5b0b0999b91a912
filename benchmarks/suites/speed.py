"""Speed suite: training and sampling throughput of ``scdit.fit`` / ``predict``, achieved FLOP/s
against the machine's matmul peak measured in the same run, and the metric panel.

Settings:

* ``peak``: a timed 2048 × 2048 matrix product in fp32 and in bf16 at the current thread count
  (best of several): the machine's matmul peak in each precision, measured in the same run as
  the rows it normalises (so ratios to it survive a noisy or shared machine).
* ``train``: for each preset of ``--speed-presets`` × precision (fp32 and, where the hardware
  multiplies bf16 natively, bf16 mixed precision) × ``--speed-compile`` mode, ``scdit.fit`` on
  a synthetic negative-binomial screen shaped like the acceptance case (20,000 cells × 300
  genes, 25 perturbations; ``synthetic_perturbation``), run twice, for a few steps and for
  ``--speed-steps`` more (after a warm-up fit in full mode): the difference gives the marginal
  time per optimizer step (cells/s at the fit's batch size), the short run the fixed overhead
  (setup, tokenizer, trainer start, validation, reference cells). Achieved FLOP/s counts a
  training step as 3 network forwards per cell.
* ``sample``: ``model.predict`` of one perturbation, ``--sample-cells`` cells, with Euler 1, 2,
  4 and 8 steps and the model's default solver (Heun 20), in each precision (cells/s; includes
  building the AnnData). The FLOPs per cell are counted with ``torch.utils.flop_counter`` on a
  small prediction of the same settings; ``cells_per_bf16_gflops`` is cells/s per GFLOP/s of
  the measured bf16 matmul peak, the machine-independent form of a sampling-speed target.
* ``metrics_default`` / ``metrics_full``: one ``scdit.evaluate`` call on 12,000 log1p cells ×
  2,000 genes × 100 perturbations (predictions are noisy copies of the real cells): the default
  baselines, and every baseline but ``additive_shrunk`` with the split-half ceiling.

Peak memory is each row's own peak resident memory where Linux lets the peak be reset
(``/proc/self/clear_refs``), else the process's peak so far. Read CPU timings with the
machine's load in mind: with torch's default of one thread per core, other processes slow each
step far more than their share (``--threads 1`` is steadier); the fractions of the peak are the
robust figures. Quick mode: 2,000 cells, tiny preset, a few steps, 64 sampled cells, a small
metric panel.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from anndata import AnnData

from .common import config_fields, fit_model, peak_rss_mib, predict_cells, reset_peak_rss

NAME = "speed"
METRICS = ("seconds", "cells_per_s", "step_ms", "overhead_s", "gflops", "peak_fraction",
           "cells_per_bf16_gflops", "peak_rss_mib")
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


#: Precision name -> (``TrainConfig.precision``, ``SamplingConfig.precision``, torch dtype name).
PRECISIONS = {"fp32": ("32-true", "fp32", "float32"), "bf16": ("bf16-mixed", "bf16", "bfloat16")}
#: Euler steps of the sampling rows (plus the model's default solver and steps).
EULER_STEPS = (1, 2, 4, 8)
#: Matmul peaks (FLOP/s) measured in this process, by (precision, threads).
_PEAKS: dict[tuple[str, int], float] = {}


def _row(setting: str, method: str, **values) -> dict:
    return {"setting": setting, "holdout": "-", "method": method, **values,
            "peak_rss_mib": round(peak_rss_mib(), 1)}


def bf16_native() -> bool:
    """Whether this machine multiplies bf16 natively (scdit's own test where it has one)."""
    import torch

    import scdit

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    test = getattr(getattr(scdit, "models", None), "bf16_supported", None)
    if test is not None:
        return bool(test(dev))
    if dev == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def matmul_peak(precision: str, n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of an ``n`` × ``n`` matrix product in ``precision`` at the current thread
    count (cached per precision and thread count for the rest of the run)."""
    import torch

    key = (precision, torch.get_num_threads())
    if key not in _PEAKS:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = getattr(torch, PRECISIONS[precision][2])
        gen = torch.Generator(device="cpu").manual_seed(0)
        a, b = (torch.randn(n, n, generator=gen).to(dev, dtype) for _ in range(2))
        best = np.inf
        with torch.no_grad():
            for i in range(reps + 1):
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                a @ b
                if dev == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first product is a warm-up
                    best = min(best, time.perf_counter() - t0)
        _PEAKS[key] = 2.0 * n**3 / best
    return _PEAKS[key]


def _precisions(opts: argparse.Namespace) -> list[str]:
    want = list(getattr(opts, "speed_precisions", None) or PRECISIONS)
    if "bf16" in want and not bf16_native() and not getattr(opts, "speed_precisions", None):
        print("speed: bf16 left out (no native bf16 matrix instructions here)", flush=True)
        want.remove("bf16")
    return want


def run_peak(seed: int, quick: bool, opts: argparse.Namespace) -> pd.DataFrame:
    """``peak`` rows: the timed 2048 × 2048 matmul in each precision."""
    import torch

    rows = []
    for prec in ("fp32", "bf16"):
        flops = matmul_peak(prec, reps=3 if quick else 10)
        rows.append(_row("peak", f"matmul 2048 {prec}", gflops=round(flops / 1e9, 1),
                         precision=prec, threads=torch.get_num_threads()))
    return pd.DataFrame(rows)


def forward_flops(model, pert: str, sampling: dict, n: int = 8) -> float:
    """Matmul FLOPs per generated cell of ``predict`` with ``sampling`` (every network forward
    of the solver), counted with ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        predict_cells(model, [pert], n, None, seed=0, quick=False, sampling=sampling)
    return counter.get_total_flops() / n


def _fit_times(adata: AnnData, seed: int, quick: bool, preset: str, train: dict,
               short: int, extra: int):
    """Seconds of a ``short``- and a ``short + extra``-step fit (after a warm-up fit in full
    mode: kernels, compilation caches); returns ``(times, longer model)``."""
    times, model = [], None
    for steps in ((short,) if not quick else ()) + (short, short + extra):
        t0 = time.perf_counter()
        model = fit_model(adata, "perturbation", control="control", seed=seed, quick=quick,
                          max_steps=steps, preset=preset, train_options=train)
        times.append(time.perf_counter() - t0)
    return times[-2:], model


def run_training(seed: int, quick: bool, opts: argparse.Namespace, preset: str) -> pd.DataFrame:
    """``train`` and ``sample`` rows of one preset, in every precision."""
    cells, genes, perts = (2000, 100, 5) if quick else (opts.speed_cells, 300, 25)
    adata = synthetic_screen(cells, genes, perts, seed)
    extra = max(2, opts.speed_steps if not quick else 4)
    short = 2
    size = f"{adata.n_obs} cells × {adata.n_vars} genes"
    pert = sorted(set(adata.obs["perturbation"]) - {"control"})[0]
    has_compile = "compile" in config_fields("train")
    modes = ["off"] if quick or not has_compile else list(opts.speed_compile)
    peak_bf16 = matmul_peak("bf16", reps=3 if quick else 10)
    rows = []
    for prec in _precisions(opts):
        peak = matmul_peak(prec, reps=3 if quick else 10)
        models = {}
        for mode in modes:
            train = {"precision": PRECISIONS[prec][0]}
            if has_compile:
                train["compile"] = mode == "on"
            reset_peak_rss()
            times, models[mode] = _fit_times(adata, seed, quick, preset, train, short, extra)
            model = models[mode]
            step_s = max(1e-9, (times[1] - times[0]) / extra)
            batch = getattr(getattr(getattr(model, "config", None), "train", None),
                            "batch_size", None)
            batch = min(batch or 256, adata.n_obs)
            fwd = forward_flops(model, pert, {"steps": 1, "solver": "euler"})
            achieved = 3.0 * fwd * batch / step_s
            label = f"scdit ({preset}, {prec}{', compiled' if mode == 'on' else ''})"
            rows.append(_row("train", label, seconds=round(times[1], 2),
                             cells_per_s=round(batch / step_s, 1), step_ms=round(1e3 * step_s, 1),
                             overhead_s=round(max(0.0, times[0] - short * step_s), 2),
                             gflops=round(achieved / 1e9, 2),
                             peak_fraction=round(achieved / peak, 4),
                             mflop_per_cell=round(3e-6 * fwd, 3), data=size,
                             steps=short + extra, preset=preset, precision=prec,
                             trained_precision=model.summary.get("precision", "?"),
                             compile=mode, batch=batch))
        if prec != "fp32" and "precision" not in config_fields("sampling"):
            continue  # this scdit samples in one precision only: its rows are the fp32 ones
        rows += _sampling_rows(models[modes[0]], pert, quick, opts, preset, prec, peak, peak_bf16)
    return pd.DataFrame(rows)


def _sampling_rows(model, pert: str, quick: bool, opts: argparse.Namespace, preset: str,
                   prec: str, peak: float, peak_bf16: float) -> list[dict]:
    """``sample`` rows of one model and precision: Euler 1/2/4/8 steps and the default."""
    n = 64 if quick else opts.sample_cells
    flow = model.config.flow
    configs = [("euler", k) for k in EULER_STEPS] + [(flow.solver, flow.steps)]
    rows = []
    for i, (solver, steps) in enumerate(configs):
        sampling = {"steps": steps, "solver": solver, "precision": PRECISIONS[prec][1]}
        reset_peak_rss()
        fpc = forward_flops(model, pert, sampling)  # also the warm-up
        t0 = time.perf_counter()
        predict_cells(model, [pert], n, None, seed=0, quick=quick, sampling=sampling)
        dt = time.perf_counter() - t0
        default = " (default)" if i == len(configs) - 1 else ""
        rows.append(_row("sample", f"scdit ({preset}, {prec}, {solver}×{steps}{default})",
                         seconds=round(dt, 3), cells_per_s=round(n / dt, 1),
                         gflops=round(fpc * n / dt / 1e9, 2),
                         peak_fraction=round(fpc * n / dt / peak, 4),
                         cells_per_bf16_gflops=round(n / dt / (peak_bf16 / 1e9), 3),
                         mflop_per_cell=round(fpc / 1e6, 3), data=f"{n} cells",
                         steps=steps, solver=solver, preset=preset, precision=prec))
    return rows


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
    g.add_argument("--speed-presets", "--speed-preset", nargs="+", default=["small"],
                   metavar="PRESET", help="DiT presets timed (default: small; quick: tiny)")
    g.add_argument("--speed-precisions", nargs="+", choices=tuple(PRECISIONS), metavar="P",
                   help="precisions timed (default: fp32, and bf16 where the hardware "
                        "multiplies bf16 natively)")
    g.add_argument("--speed-compile", nargs="+", choices=("off", "on"), default=["off", "on"],
                   help="TrainConfig.compile of the timed fits, where this scdit has it "
                        "(default: both; quick mode: off)")
    g.add_argument("--sample-cells", type=int, default=2048, help="cells generated when timing")


def units(quick: bool, opts: argparse.Namespace) -> list[tuple[str, str, Callable]]:
    """``(setting, holdout, run(seed) -> rows)`` of every unit to run."""
    presets = ["tiny"] if quick else list(opts.speed_presets)
    return [("peak", "-", lambda seed: run_peak(seed, quick, opts)),
            *[("train+sample", p, lambda seed, p=p: run_training(seed, quick, opts, p))
              for p in presets],
            ("metrics", "-", lambda seed: run_metrics(seed, quick, opts))]
