#!/usr/bin/env python
"""Training and sampling throughput of scdit on synthetic data shaped like the acceptance case.

Measures, on one device (CPU or one CUDA GPU):

(a) the machine's matmul FLOP/s in fp32 and bf16 (square ``torch.matmul``, best of several after
    warm-up);
(b) training throughput (cells/s) of the actual training computation, in fp32 and in bf16
    autocast: a fresh velocity field built like ``scdit.fit`` builds it (``build_field``), the
    fitted ``GeneTokenizer``, the rectified-flow loss (``flow_matching_loss``), AdamW, gradient
    clipping and the EMA update, fed by scdit's own data loader;
(c) sampling throughput (cells/s) with the model's default solver and steps, both the raw ODE
    integration on the device and the user-facing ``ScDiT.predict``;
(d) peak memory: the process's maximum resident set (``getrusage``) and, on a GPU, the torch
    CUDA peak allocated memory of each phase;
(e) achieved training FLOP/s: forward FLOPs counted with ``torch.utils.flop_counter`` (attention
    through the math kernel so that it is counted), times 3 for forward + backward, divided by
    the step time, as a fraction of the measured fp32 and bf16 matmul FLOP/s;

plus ``scdit.fit`` itself (end to end, ``precision="auto"``) at two lengths, which gives its
marginal per-step time (a check on the raw loop) and its fixed overhead, and from them an
estimate of the wall time of the default ``scdit.fit`` (``max_steps=None`` →
``scdit.train.auto_max_steps``) on the data: overhead + steps × raw-loop step time at fit's
precision + validations.

Run ``python benchmarks/train_throughput.py --help``. The default invocation takes about two
minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import sys
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

import scdit  # noqa: E402
from scdit._config import DIT_PRESETS  # noqa: E402
from scdit._model import build_field  # noqa: E402
from scdit.data._dataset import CellDataset, make_loader  # noqa: E402
from scdit.data._representation import to_log1p  # noqa: E402
from scdit.datasets import synthetic_perturbation  # noqa: E402
from scdit.flow import flow_matching_loss, get_time_sampler, guided, integrate, noise_like  # noqa: E402
from scdit.train import EMA, auto_max_steps  # noqa: E402

CONDITION_KEY = "perturbation"


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def max_rss_mib() -> float:
    """Peak resident set of this process so far (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


class Phase:
    """Records peak RSS so far and the CUDA peak allocated memory within the phase."""

    def __init__(self, device: torch.device, results: dict, name: str):
        self.device, self.results, self.name = device, results, name

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        mem = {"max_rss_mib": round(max_rss_mib(), 1)}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            mem["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        self.results.setdefault("memory", {})[self.name] = mem
        return False


def load_avg() -> float | None:
    """1-minute load average (``None`` where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "scdit": getattr(scdit, "__version__", "?"), "device": str(device),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cpu":
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    else:
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return info


# --------------------------------------------------------------------------- (a) matmul peak
def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, *, reps: int = 5,
                 min_seconds: float = 0.5) -> float:
    """FLOP/s of an ``n × n`` by ``n × n`` matmul: best single call after warm-up."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    for _ in range(2):
        torch.matmul(a, b)
    sync(device)
    best, spent, done = math.inf, 0.0, 0
    while done < reps or (spent < min_seconds and done < 50):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        dt = time.perf_counter() - t0
        best, spent, done = min(best, dt), spent + dt, done + 1
    return 2 * n**3 / best


# --------------------------------------------------------------------------- data
def make_data(cells: int, genes: int, perturbations: int, cell_types: int = 1, seed: int = 0):
    """Synthetic negative-binomial screen, 5 % control cells, no combinations.

    The default (20,000 cells, 300 genes, 25 perturbations, one cell type) is the acceptance
    case of ``benchmarks/seen_perturbations.py``: 1,000 control cells and 760 per perturbation.
    """
    per_type = cells // cell_types
    n_control = max(1, round(0.05 * per_type))
    per_cond = max(1, (per_type - n_control) // max(1, perturbations))
    n_control = per_type - per_cond * perturbations if perturbations else per_type
    return synthetic_perturbation(n_genes=genes, n_perturbations=perturbations, n_combinations=0,
                                  n_cells_per_condition=per_cond, n_control=max(1, n_control),
                                  cell_types=tuple(f"T{i}" for i in range(cell_types)), seed=seed,
                                  return_truth=False)


# --------------------------------------------------------------------------- scdit.fit
def covariate_keys(adata) -> list[str]:
    return ["cell_type"] if adata.obs["cell_type"].nunique() > 1 else []


def run_fit(adata, preset: str, steps: int, batch_size: int, accelerator: str):
    t0 = time.perf_counter()
    model = scdit.fit(adata, CONDITION_KEY, control="control", covariate_keys=covariate_keys(adata),
                      preset=preset, max_steps=steps, batch_size=batch_size,
                      accelerator=accelerator, verbose=False)
    return time.perf_counter() - t0, model


# --------------------------------------------------------------------------- (b) training loop
class Trainer:
    """The training computation of ``scdit.fit`` without Lightning around it."""

    def __init__(self, model, adata, device: torch.device, batch_size: int, seed: int = 0):
        cfg = model.config
        self.device = device
        self.tok = model.tokenizer
        self.field = build_field(cfg, self.tok, model.vocab, model.covariates).to(device)
        self.n_params = sum(p.numel() for p in self.field.parameters())
        tc = cfg.train
        decay = [p for p in self.field.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.field.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
        self.ema = EMA(self.field, tc.ema_decay)
        self.ema.module.to(device)
        self.grad_clip = tc.grad_clip
        self.cond_dropout = cfg.dit.cond_dropout
        self.sample_t = get_time_sampler(cfg.flow.time_sampling, mean=cfg.flow.logit_mean,
                                         std=cfg.flow.logit_std)
        X = to_log1p(adata.X, model.representation)
        X = X[:, adata.var_names.get_indexer(list(self.tok.genes))]
        atoms = model.vocab.encode(list(adata.obs[CONDITION_KEY].astype(str)))
        keys = list(model.covariates.keys)
        covs = (model.covariates.encode(adata.obs[keys].astype(str)) if keys
                else np.zeros((adata.n_obs, 0), np.int64))
        self.dataset = CellDataset(X, atoms, covs)
        self.loader = make_loader(self.dataset, batch_size, shuffle=True, seed=seed, drop_last=True)
        self._it = iter(self.loader)

    def batch(self) -> dict[str, torch.Tensor]:
        try:
            b = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            b = next(self._it)
        return {k: v.to(self.device, non_blocking=True) for k, v in b.items()}

    def loss(self, batch, field=None) -> torch.Tensor:
        field = self.field if field is None else field
        x0 = self.tok.encode(batch["x"])  # (B, T, P)
        b = x0.shape[0]
        x1 = noise_like(x0)
        t = self.sample_t(b, None, x0.device)
        drop = torch.rand(b, device=x0.device) < self.cond_dropout
        cond = {"atoms": batch["atoms"], "covariates": batch["covariates"], "drop": drop}
        return flow_matching_loss(lambda x, tt: field(x, tt, cond), x0, x1, t)

    def step(self, bf16: bool) -> torch.Tensor:
        batch = self.batch()
        with autocast(self.device, bf16):
            loss = self.loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.field.parameters(), self.grad_clip)
        self.opt.step()
        self.ema.update(self.field)
        return loss.detach()

    def time_steps(self, steps: int, warmup: int, bf16: bool) -> float:
        """Seconds per optimizer step (median of per-step times after ``warmup`` steps)."""
        self.field.train()
        for _ in range(warmup):
            self.step(bf16)
        sync(self.device)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step(bf16)
            sync(self.device)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def time_validation(self, n_cells: int) -> float:
        """Seconds for the validation loss of ``n_cells`` cells with the EMA field (one batch)."""
        idx = np.arange(min(n_cells, len(self.dataset)))
        b = {k: v.to(self.device) for k, v in self.dataset[idx].items()}
        with torch.no_grad():
            self.loss(b, self.ema.module)
            sync(self.device)
            t0 = time.perf_counter()
            self.loss(b, self.ema.module)
            sync(self.device)
        return time.perf_counter() - t0

    def count_flops(self, batch_size: int) -> dict:
        """FLOPs of one forward and of one forward + backward on ``batch_size`` cells."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        b = self.batch()
        b = {k: v[:batch_size] for k, v in b.items()}
        x0 = self.tok.encode(b["x"])
        t = torch.full((x0.shape[0],), 0.5, device=self.device)
        cond = {"atoms": b["atoms"], "covariates": b["covariates"],
                "drop": torch.zeros(x0.shape[0], dtype=torch.bool, device=self.device)}
        # The fused CPU attention kernel is not registered with the flop counter; the math
        # kernel decomposes into counted matmuls.
        with sdpa_kernel(SDPBackend.MATH):
            with FlopCounterMode(display=False) as fc:
                with torch.no_grad():
                    self.field(x0, t, cond)
            fwd = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                self.field(x0, t, cond).float().pow(2).mean().backward()
            fwd_bwd = fc.get_total_flops()
        self.opt.zero_grad(set_to_none=True)
        return {"forward": int(fwd), "forward_backward_counted": int(fwd_bwd)}


def analytic_forward_flops(n_tokens: int, patch: int, d: int, depth: int, mlp_ratio: float,
                           batch: int, freq_dim: int = 256) -> int:
    """Matmul FLOPs of one DiT forward (cross-check of the flop counter)."""
    inner = int(d * mlp_ratio)
    per_token_layer = 2 * (3 * d * d + d * d + 2 * d * inner) + 4 * n_tokens * d
    per_cell = (n_tokens * depth * per_token_layer          # blocks
                + depth * 2 * d * 6 * d                      # adaLN of blocks
                + 2 * n_tokens * patch * d * 2               # token embedding + final projection
                + 2 * d * 2 * d                              # final adaLN
                + 2 * (freq_dim * d + d * d)                 # time MLP
                + 2 * 2 * d * d)                             # condition MLP
    return int(per_cell * batch)


# --------------------------------------------------------------------------- (c) sampling
def time_sampling(field, model, n_cells: int, device: torch.device, bf16: bool) -> float:
    """Seconds to integrate ``n_cells`` cells of one perturbation with the default solver."""
    cfg = model.config.flow
    pert = model.vocab.atoms[0]
    atoms = torch.as_tensor(model.vocab.encode([pert] * n_cells), device=device)
    keys = list(model.covariates.keys)
    if keys:
        import pandas as pd

        first = {k: model.covariates.categories[k][0] for k in keys}
        df = pd.DataFrame({k: [first[k]] * n_cells for k in keys})
        covs = torch.as_tensor(model.covariates.encode(df), device=device)
    else:
        covs = torch.zeros((n_cells, 0), dtype=torch.long, device=device)
    shape = (n_cells, model.tokenizer.n_tokens, model.tokenizer.patch_size)
    x1 = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    v = guided(field, {"atoms": atoms, "covariates": covs}, 1.0)
    with torch.no_grad(), autocast(device, bf16):
        integrate(v, x1, steps=1, solver=cfg.solver)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        integrate(v, x1, steps=cfg.steps, solver=cfg.solver)
        sync(device)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- report
def fmt(x, nd=1):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def table(r: dict) -> str:
    m, d, tr, sa, fl, fit, est = (r["machine"], r["data"], r["train"], r["sampling"], r["flops"],
                                  r["fit"], r["estimate"])
    dev = m.get("gpu") or f"{m['cpu']} ({m['torch_threads']} threads, {m.get('cpu_capability', '')})"
    lines = [
        f"### scdit throughput — preset `{r['preset']}` on {m['device']}: {dev}",
        "",
        f"torch {m['torch']}, python {m['python']}. Data: {d['cells']:,} cells × {d['genes']} genes, "
        f"{d['perturbations']} perturbations, {d['cell_types']} cell type(s) ({d['n_train']:,} train / {d['n_val']:,} "
        f"validation); {d['n_modelled_genes']} genes modelled in {d['n_tokens']} tokens of "
        f"{d['patch_size']}; DiT `{r['preset']}` ({d['n_params'] / 1e6:.2f} M parameters), "
        f"batch {d['batch_size']}. Timed {r['steps']} optimizer steps per precision after "
        f"{r['warmup']} warm-up steps (median step).",
        "",
        "| metric | fp32 | bf16 autocast |",
        "|---|---:|---:|",
        f"| matmul {r['matmul_size']}² peak (GFLOP/s) | {fmt(r['matmul']['fp32'] / 1e9)} | "
        f"{fmt(r['matmul']['bf16'] / 1e9)} |",
        f"| train step (ms) | {fmt(tr['fp32']['step_s'] * 1e3)} | {fmt(tr['bf16']['step_s'] * 1e3)} |",
        f"| **train throughput (cells/s)** | **{fmt(tr['fp32']['cells_per_s'])}** | "
        f"**{fmt(tr['bf16']['cells_per_s'])}** |",
        f"| achieved train GFLOP/s (3 × forward FLOPs / step) | {fmt(tr['fp32']['flops'] / 1e9)} | "
        f"{fmt(tr['bf16']['flops'] / 1e9)} |",
        f"| … % of fp32 matmul peak | {fmt(100 * tr['fp32']['frac_fp32'])} % | "
        f"{fmt(100 * tr['bf16']['frac_fp32'])} % |",
        f"| … % of bf16 matmul peak | {fmt(100 * tr['fp32']['frac_bf16'])} % | "
        f"{fmt(100 * tr['bf16']['frac_bf16'])} % |",
        f"| sampling, {sa['solver']} × {sa['steps']} steps ({sa['n_eval']} field evals), raw "
        f"(cells/s) | {fmt(sa['fp32_cells_per_s'])} | {fmt(sa['bf16_cells_per_s'])} |",
        f"| `model.predict` (cells/s, CPU, {sa['n_cells']} cells) | {fmt(sa['predict_cells_per_s'])} | — |",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| forward FLOPs per cell (FlopCounterMode; analytic) | {fl['forward_per_cell'] / 1e6:.2f} M; "
        f"{fl['analytic_forward_per_cell'] / 1e6:.2f} M |",
        f"| train FLOPs per step (3 × forward; counted fwd+bwd) | {fl['train_per_step'] / 1e9:.2f} G; "
        f"{fl['forward_backward_counted_per_step'] / 1e9:.2f} G |",
        f"| `scdit.fit` per step, precision {fit['precision']} (marginal, {fit['short_steps']}→"
        f"{fit['long_steps']} steps) | {fmt(fit['step_s'] * 1e3)} ms = "
        f"{fmt(d['batch_size'] / fit['step_s'])} cells/s |",
        f"| `scdit.fit` fixed overhead (setup, tokenizer, trainer, reference cells, "
        f"1 validation) | "
        f"{fmt(fit['overhead_s'])} s |",
        f"| default `scdit.fit` length: auto_max_steps({d['n_train']:,}, {d['batch_size']}) | "
        f"{est['steps']:,} steps, {est['val_checks']} validations |",
        f"| **estimated wall time of the default `scdit.fit`** (precision {fit['precision']}; "
        f"overhead + steps × train step + validations) | **{hms(est['seconds'])}** "
        f"({fmt(est['seconds'])} s) |",
        f"| … with fp32 / bf16 autocast train steps; from fit's marginal step | "
        f"{hms(est['seconds_fp32'])} / {hms(est['seconds_bf16'])}; "
        f"{hms(est['seconds_from_fit_marginal'])} |",
        f"| peak RSS (whole run) | {fmt(r['peak_rss_mib'])} MiB |",
        "| max RSS so far, after each phase (MiB) | "
        + ", ".join(f"{k} {fmt(v['max_rss_mib'])}" for k, v in r["memory"].items()) + " |",
    ]
    if "cuda_peak_train_mib" in r:
        lines.append(f"| CUDA peak allocated, training fp32 / bf16 | "
                     f"{fmt(r['cuda_peak_train_mib']['fp32'])} / "
                     f"{fmt(r['cuda_peak_train_mib']['bf16'])} MiB |")
    lines.append(f"| benchmark wall time | {fmt(r['wall_s'])} s |")
    lines.append(f"| load average (1 min) at start / end, {m['cpu_count']} CPUs | "
                 f"{fmt(r['load_start'], 2)} / {fmt(r['load_end'], 2)} |")
    busy = max(r["load_start"] or 0, r["load_end"] or 0)
    if m["device"] == "cpu" and busy > (m["cpu_count"] or 1) - 0.5:
        lines += ["", f"**Warning:** the machine was busy (load {busy:.1f} on {m['cpu_count']} CPUs): "
                  "CPU timings are pessimistic. Rerun on an idle machine; on a shared one "
                  "`--threads 1` is less sensitive to other processes."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(DIT_PRESETS))
    p.add_argument("--steps", type=int, default=10,
                   help="timed optimizer steps per precision (and the difference between the two "
                        "scdit.fit runs)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes", type=int, default=300)
    p.add_argument("--perturbations", type=int, default=25)
    p.add_argument("--cell-types", type=int, default=1, help="cell types (a covariate when > 1)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--sample-cells", type=int, default=256, help="cells generated per sampling run")
    p.add_argument("--matmul-size", type=int, default=None,
                   help="matmul side (default 2048 on CPU, 8192 on CUDA)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    wall0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    n_mm = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    torch.manual_seed(args.seed)
    r: dict = {"preset": args.preset, "steps": args.steps, "warmup": args.warmup,
               "matmul_size": n_mm, "machine": machine_info(device), "load_start": load_avg()}
    log = lambda msg: print(f"[{time.perf_counter() - wall0:6.1f} s] {msg}", file=sys.stderr)  # noqa: E731

    # (a) matmul peaks
    with Phase(device, r, "matmul"):
        r["matmul"] = {"fp32": matmul_flops(device, torch.float32, n_mm),
                       "bf16": matmul_flops(device, torch.bfloat16, n_mm)}
    log(f"matmul fp32 {r['matmul']['fp32'] / 1e9:.1f} GFLOP/s, bf16 {r['matmul']['bf16'] / 1e9:.1f} GFLOP/s")

    # data
    with Phase(device, r, "data"):
        adata = make_data(args.cells, args.genes, args.perturbations, args.cell_types, args.seed)
    log(f"synthetic data {adata.n_obs} × {adata.n_vars}")

    # scdit.fit end to end, at two lengths → per-step time and fixed overhead
    short = max(2, args.warmup)
    with Phase(device, r, "fit"):
        t_short, _ = run_fit(adata, args.preset, short, args.batch_size, accelerator)
        log(f"scdit.fit {short} steps: {t_short:.1f} s")
        t_long, model = run_fit(adata, args.preset, short + args.steps, args.batch_size, accelerator)
        log(f"scdit.fit {short + args.steps} steps: {t_long:.1f} s")
    s = model.summary
    fit_step = max(1e-9, (t_long - t_short) / args.steps)

    trainer = Trainer(model, adata, device, args.batch_size, args.seed)
    d = {"cells": adata.n_obs, "genes": adata.n_vars, "perturbations": args.perturbations,
         "cell_types": args.cell_types,
         "n_train": s.get("n_train", adata.n_obs), "n_val": s.get("n_val", 0),
         "n_modelled_genes": model.tokenizer.n_genes, "n_tokens": model.tokenizer.n_tokens,
         "patch_size": model.tokenizer.patch_size, "n_params": trainer.n_params,
         "batch_size": args.batch_size}
    r["data"] = d

    # (e) FLOPs
    fl = trainer.count_flops(args.batch_size)
    dit = model.config.dit
    bs = min(args.batch_size, len(trainer.dataset))
    analytic = analytic_forward_flops(d["n_tokens"], d["patch_size"], dit.hidden_size, dit.depth,
                                      dit.mlp_ratio, bs)
    r["flops"] = {"forward_per_step": fl["forward"], "forward_per_cell": fl["forward"] / bs,
                  "analytic_forward_per_cell": analytic / bs, "train_per_step": 3 * fl["forward"],
                  "forward_backward_counted_per_step": fl["forward_backward_counted"]}

    # (b) training throughput
    r["train"] = {}
    cuda_peak = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        with Phase(device, r, f"train_{name}"):
            step_s = trainer.time_steps(args.steps, args.warmup, bf16)
        if device.type == "cuda":
            cuda_peak[name] = r["memory"][f"train_{name}"]["cuda_peak_mib"]
        flops = r["flops"]["train_per_step"] / step_s
        r["train"][name] = {"step_s": step_s, "cells_per_s": bs / step_s, "flops": flops,
                            "frac_fp32": flops / r["matmul"]["fp32"],
                            "frac_bf16": flops / r["matmul"]["bf16"]}
        log(f"train {name}: {step_s * 1e3:.1f} ms/step, {bs / step_s:.0f} cells/s")
    if cuda_peak:
        r["cuda_peak_train_mib"] = cuda_peak
    t_val = trainer.time_validation(max(1, d["n_val"]))

    # scdit.fit estimate
    fit_prec = s.get("precision", "?")
    ref = "bf16" if "bf16" in str(fit_prec) else "fp32"  # the raw loop at fit's precision
    step_ref = r["train"][ref]["step_s"]
    t_val_fit = t_val if d["n_val"] else 0.0
    overhead = max(0.0, t_short - short * step_ref - t_val_fit)
    r["fit"] = {"precision": fit_prec, "short_steps": short, "long_steps": short + args.steps,
                "short_s": t_short, "long_s": t_long, "summary_seconds_long": s.get("seconds"),
                "step_s": fit_step, "overhead_s": overhead, "validation_s": t_val}
    tc = model.config.train
    default_steps = auto_max_steps(d["n_train"], args.batch_size)
    val_checks = default_steps // min(tc.val_every, default_steps) if d["n_val"] else 0
    # Per-step time from the raw loop's median (robust to a stray slow step), at fit's precision;
    # the marginal per-step time of scdit.fit itself is reported beside it as a check.
    def estimate(step_s: float) -> float:
        return overhead + default_steps * step_s + val_checks * t_val

    r["estimate"] = {"steps": default_steps, "val_checks": val_checks,
                     "seconds": estimate(step_ref),
                     "seconds_fp32": estimate(r["train"]["fp32"]["step_s"]),
                     "seconds_bf16": estimate(r["train"]["bf16"]["step_s"]),
                     "seconds_from_fit_marginal": estimate(fit_step),
                     "note": "upper bound: early stopping (patience "
                             f"{tc.patience} validations) can end training sooner"}

    # (c) sampling
    n_s = args.sample_cells
    field = model.field.to(device).eval()
    with Phase(device, r, "sampling"):
        t32 = time_sampling(field, model, n_s, device, bf16=False)
        t16 = time_sampling(field, model, n_s, device, bf16=True)
    log(f"sampling {n_s} cells: fp32 {t32:.2f} s, bf16 {t16:.2f} s")
    model.field = field.cpu()
    pert = model.vocab.atoms[0]
    model.predict(pert, n_cells=min(n_s, 16), seed=0)  # warm-up
    with Phase(device, r, "predict"):
        t0 = time.perf_counter()
        model.predict(pert, n_cells=n_s, seed=0)
        t_pred = time.perf_counter() - t0
    log(f"predict {n_s} cells: {t_pred:.2f} s")
    solver, steps = model.config.flow.solver, model.config.flow.steps
    evals = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}.get(solver, 0) * steps or None
    r["sampling"] = {"solver": solver, "steps": steps, "n_eval": evals or "adaptive",
                     "n_cells": n_s, "fp32_s": t32, "bf16_s": t16, "predict_s": t_pred,
                     "fp32_cells_per_s": n_s / t32, "bf16_cells_per_s": n_s / t16,
                     "predict_cells_per_s": n_s / t_pred}

    r["peak_rss_mib"] = max_rss_mib()
    r["load_end"] = load_avg()
    r["wall_s"] = time.perf_counter() - wall0
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2, default=str)
        log(f"wrote {args.json}")
    print(table(r), flush=True)
    return r


if __name__ == "__main__":
    main()
