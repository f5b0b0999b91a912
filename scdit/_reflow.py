"""Reflow (Liu et al., 2022): straighten a fitted model's flow so that a few Euler steps suffice.

A rectified flow trained on independent (cell, noise) couplings, or on couplings made optimal
only within small minibatch groups, has curved paths: integrating it takes tens of solver
steps. Reflow draws sources ``x1`` (noise, or control cells plus noise),
integrates the fitted model from each to its cell ``x0`` with the model's accurate solver, and
fine-tunes a copy of the network on the straight paths between these fixed pairs. The new flow
transports the same source distribution to (nearly) the same cells along almost straight lines,
so one to a few Euler steps reproduce what tens of Heun steps did.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch

from .config import SamplingConfig, TrainConfig
from .data import parse_doses
from .flow import SOLVERS, guided, integrate
from .model import ScDiT
from .models import bf16_supported
from .train import PairDataset, train_field

#: Default number of (source, cell) pairs drawn by :func:`reflow`.
REFLOW_PAIRS = 16_384
#: Default fine-tuning steps of :func:`reflow`.
REFLOW_STEPS = 1500
#: Default Euler steps of a reflowed model's ``predict``.
REFLOW_SAMPLING_STEPS = 1


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"reflow: {name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _conditions(model: ScDiT, rows: np.ndarray, rng: np.random.Generator, cov_drop: float):
    """Encoded conditions of the reference cells ``rows``: atoms, covariate codes, doses, and
    context ids (covariates dropped, as in training, with probability ``cov_drop``)."""
    ref, cfg = model.reference, model.config
    obs = ref.obs.iloc[rows]
    labels = obs[cfg.data.condition_key].astype(str).tolist()
    atoms = model.vocab.encode(labels)
    if model.covariates.keys:
        covs = np.asarray(model.covariates.encode(obs), dtype=np.int64)
        context = np.unique(covs, axis=0, return_inverse=True)[1].ravel()
        if cov_drop > 0:
            covs = covs * (rng.random(len(rows)) >= cov_drop)[:, None]
    else:
        covs = np.zeros((len(rows), 0), np.int64)
        context = np.zeros(len(rows), np.int64)
    dose = None
    if cfg.data.dose_key is not None:
        dose = parse_doses(labels, obs[cfg.data.dose_key].tolist(), model.vocab, atoms.shape[1],
                           cfg.data.dose_key)
    return atoms, covs, dose, context


def _sources(model: ScDiT, rows: np.ndarray, context: np.ndarray, gen: torch.Generator,
             rng: np.random.Generator) -> torch.Tensor:
    """Source draws ``x1`` ``(n, T, P)``: Gaussian noise, or for a control-source model a
    control cell of the same context (from the stored reference cells) plus scaled noise."""
    shape = (len(rows), model.tokenizer.n_tokens, model.tokenizer.patch_size)
    noise = torch.randn(shape, generator=gen)
    cfg = model.config
    if cfg.flow.source != "control":
        return noise
    ref = model.reference
    is_ctrl = ref.obs[cfg.data.condition_key].astype(str).to_numpy() == cfg.data.control
    ctrl_rows = np.flatnonzero(is_ctrl)
    if model.covariates.keys:
        ctrl_codes = np.asarray(model.covariates.encode(ref.obs.iloc[ctrl_rows]))
        all_codes = np.asarray(model.covariates.encode(ref.obs.iloc[rows]))
    else:
        ctrl_codes = np.zeros((len(ctrl_rows), 0), np.int64)
        all_codes = np.zeros((len(rows), 0), np.int64)
    tokens = model.encode(ref[ctrl_rows])  # (n_ctrl, T, P)
    pick = np.empty(len(rows), np.int64)
    for code in np.unique(all_codes, axis=0):
        mine = np.flatnonzero((all_codes == code).all(1))
        pool = np.flatnonzero((ctrl_codes == code).all(1))
        if not len(pool):
            raise ValueError(f"reflow: the model's reference cells hold no control cells of the "
                             f"context {code.tolist()}; a control-source model needs them.")
        pick[mine] = rng.choice(pool, len(mine), replace=True)
    return tokens[torch.as_tensor(pick)] + cfg.flow.source_noise * noise


@torch.no_grad()
def _teacher_cells(model: ScDiT, x1: torch.Tensor, atoms, covs, dose, *, steps: int, solver: str,
                   batch_size: int, verbose: bool) -> torch.Tensor:
    """Integrate the fitted model from each source ``x1`` to its cell ``x0`` (bf16 network
    where the hardware has it, fp32 solver state)."""
    field = model.field.eval()
    out = torch.empty_like(x1)
    bf16 = bf16_supported("cpu")
    starts = range(0, len(x1), batch_size)
    if verbose:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="reflow: pairs", unit="batch", leave=False)
    for s in starts:
        sl = slice(s, min(len(x1), s + batch_size))
        cond = {"atoms": torch.as_tensor(atoms[sl]), "covariates": torch.as_tensor(covs[sl])}
        if dose is not None:
            cond["dose"] = torch.as_tensor(dose[sl], dtype=torch.float32)
        v = guided(field, cond, 1.0)

        def v32(x, t, v=v):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return v(x, t).float()

        out[sl] = integrate(v32, x1[sl], steps=steps, solver=solver)
    return out


def reflow(model: ScDiT, *, n_pairs: int = REFLOW_PAIRS, max_steps: int = REFLOW_STEPS,
           steps: int = REFLOW_SAMPLING_STEPS, teacher: SamplingConfig | None = None,
           train: TrainConfig | None = None, seed: int = 0, verbose: bool = True) -> ScDiT:
    """Straighten a fitted model's flow so that ``predict`` needs only a few Euler steps.

    Draws ``n_pairs`` sources for conditions of the model's stored reference cells (their
    perturbation, covariates and dose; for a control-source model, a control cell of the same
    context plus noise, with covariates dropped as in training), integrates the model from each
    with its own solver to a cell, then fine-tunes a copy of the network for ``max_steps`` steps
    on the straight paths between these fixed pairs (half the times at ``t = 1``, where every
    Euler solve starts, the others uniform, :func:`scdit.flow.uniform_end`; no condition
    dropout, so the unconditional branch, used only by guidance, stays the original one).

    Parameters
    ----------
    model
        A fitted model (:func:`scdit.fit` or :func:`scdit.load`). It is not changed.
    n_pairs
        Pairs drawn; each costs one ODE solve of the original model.
    max_steps
        Fine-tuning steps (batch size and learning rate from ``train``).
    steps
        Euler steps of the returned model's default sampling (``FlowConfig.steps``;
        ``predict(..., sampling=SamplingConfig(steps=k))`` chooses another number).
    teacher
        How the original model is integrated (default: its own solver and steps).
    train
        Fine-tuning settings (default: the model's :class:`~scdit.TrainConfig` with a third
        of its learning rate, 100 warm-up steps and ``max_steps``).
    seed
        Seed of the pairs and of the fine-tuning.
    verbose
        Show progress.

    Returns
    -------
    ScDiT
        A new model with the straightened network, Euler sampling with ``steps`` steps by
        default, and ``summary["reflow"]`` recording how it was made. Saved and loaded like
        any model.
    """
    if not isinstance(model, ScDiT):
        raise TypeError(f"reflow needs a fitted scdit.ScDiT (from scdit.fit or scdit.load), got "
                        f"{type(model).__name__}.")
    n_pairs = _check_int("n_pairs", n_pairs, 64)
    max_steps = _check_int("max_steps", max_steps, 1)
    steps = _check_int("steps", steps, 1)
    seed = _check_int("seed", seed, 0)
    teacher = SamplingConfig() if teacher is None else teacher
    if not isinstance(teacher, SamplingConfig):
        raise TypeError(f"reflow: teacher must be a SamplingConfig, got {type(teacher).__name__}.")
    cfg = model.config
    t_steps = teacher.steps or cfg.flow.steps
    t_solver = teacher.solver or cfg.flow.solver
    if t_solver not in SOLVERS or t_solver == "adaptive":
        raise ValueError(f"reflow: teacher solver must be a fixed-step solver of "
                         f"{[s for s in SOLVERS if s != 'adaptive']}, got {t_solver!r}.")
    if train is None:
        train = dataclasses.replace(cfg.train, lr=cfg.train.lr / 3, warmup_steps=100,
                                    max_steps=max_steps, max_minutes=None, checkpoint_dir=None,
                                    resume=False, checkpoint_every=None, seed=seed)
    elif not isinstance(train, TrainConfig):
        raise TypeError(f"reflow: train must be a TrainConfig, got {type(train).__name__}.")
    else:
        train = dataclasses.replace(train, max_steps=max_steps)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    rows = rng.choice(model.reference.n_obs, n_pairs, replace=True)
    cov_drop = float(cfg.conditions.covariate_dropout or 0.0) \
        if cfg.flow.source == "control" else 0.0
    atoms, covs, dose, context = _conditions(model, rows, rng, cov_drop)
    x1 = _sources(model, rows, context, gen, rng)
    x0 = _teacher_cells(model, x1, atoms, covs, dose, steps=t_steps, solver=t_solver,
                        batch_size=teacher.batch_size, verbose=verbose)
    t_pairs = time.perf_counter() - t0
    pairs = PairDataset(x0, x1, atoms, covs, dose=dose)
    n_val = min(1024, max(1, n_pairs // 20))
    order = rng.permutation(n_pairs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = copy.deepcopy(model.field).train().requires_grad_(True)
        result = train_field(
            student, model.tokenizer, pairs.subset(order[n_val:]), pairs.subset(order[:n_val]),
            dit=dataclasses.replace(cfg.dit, cond_dropout=0.0),
            flow=dataclasses.replace(cfg.flow, source="pairs", time_sampling="uniform_end"),
            train=train, verbose=verbose)
    new_cfg = dataclasses.replace(cfg, flow=dataclasses.replace(cfg.flow, steps=steps,
                                                                solver="euler"))
    summary = dict(model.summary)
    summary["reflow"] = {"n_pairs": n_pairs, "teacher_solver": t_solver,
                         "teacher_steps": int(t_steps), "steps": result.steps,
                         "max_steps": max_steps, "sampling_steps": steps,
                         "pair_seconds": round(t_pairs, 1),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "best_val_loss": result.best_val_loss, "history": result.history,
                         "precision": result.precision, "seed": seed}
    if verbose:
        print(f"scdit: reflowed with {n_pairs} pairs ({t_solver} × {t_steps}, {t_pairs:.0f} s) "
              f"and {result.steps} steps ({result.seconds:.0f} s); predict now integrates "
              f"{steps} Euler step{'s' if steps > 1 else ''} by default")
    return ScDiT(new_cfg, model.vocab, model.covariates, model.tokenizer, result.field,
                 model.var_names, model.reference, summary)
