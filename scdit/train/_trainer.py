"""Build and run the Lightning Trainer for a velocity field."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from ..config import DiTConfig, FlowConfig, TrainConfig
from ..data import CellDataset, StreamedTrainingSet, StreamLoader, canonical_label
from ..models import VelocityField, bf16_supported
from ._budget import TimeBudget
from ._checkpoint import StepCheckpoint
from ._loader import ResumableLoader, eval_loader
from ._module import FlowModule


@dataclass
class TrainResult:
    """Trained EMA field and what happened during training."""

    field: VelocityField
    steps: int
    seconds: float
    best_val_loss: float
    history: list[dict[str, float]]
    precision: str
    accelerator: str
    max_steps: int
    compiled: bool = False  # trained with a torch.compile-d network
    budget_steps: int | None = None  # length the time budget shortened the run to, if it did
    stopped_by_time: bool = False  # the hard time limit ended the run before its (planned) end


def auto_max_steps(n_cells: int, batch_size: int, source: str = "noise",
                   held_out_contexts: bool = True) -> int:
    """Default training length from the data size, the flow's source and the design.

    * ``"noise"`` (generate cells from noise): ~130 passes over the data, clipped to
      [4000, 8000] steps. On the held-out Norman doubles benchmark (2,875 cells: 4,000 steps
      are ~350 passes) 4,000 steps beat 1,000 and 2,000, and runs allowed 8,000 stopped early
      near 5,000; on the seen Papalexi screen (~16,000 training cells) 8,000 steps (~130
      passes) generated closer to the held-out cells than 4,000 (~65 passes), the generator
      alone most (benchmarks/archive/RESULTS.md).
    * ``"control"`` (transport control cells) with ``held_out_contexts`` (a context in the
      training data has control cells but lacks perturbations other contexts have,
      :func:`contexts_lacking_perturbations`: the model will be asked to transfer): ~15
      passes, clipped to [300, 2000] steps. Longer training fits the training contexts'
      responses more closely and transfers worse to a held-out context (held-out
      glioblastoma patients benchmark: at 1,000 steps the generator alone lost Pearson Δ on
      most patients and energy on three of five, though the default's energy improved).
    * ``"control"`` without held-out contexts (every context has every perturbation): ~60
      passes, clipped to [1200, 8000] steps. Predicting contexts it was trained on, the
      transport needs the longer fit (seen glioblastoma patients benchmark: 1,200 steps
      against 300 moved the energy distance below the seen-mean baseline's).

    A fixed length, so that a fit depends only on the data, settings and seed; an opt-in
    ``TrainConfig.max_minutes`` bounds the wall time (:class:`~scdit.train.TimeBudget`).
    """
    if source == "control" and held_out_contexts:
        return int(min(2000, max(300, round(15 * n_cells / batch_size))))
    if source == "control":
        return int(min(8000, max(1200, round(60 * n_cells / batch_size))))
    return int(min(8000, max(4000, round(130 * n_cells / batch_size))))


def contexts_lacking_perturbations(labels: np.ndarray, context: np.ndarray, control: str,
                                   separator: str | None = "+") -> int:
    """How many covariate contexts have control cells but lack a perturbation that another
    context has: held-out contexts, which a model is fitted to transfer to (their control
    cells are in the training data, their perturbed cells are not).

    Parameters
    ----------
    labels
        Condition label of each cell (combinations are order-free: ``B+A`` is ``A+B``).
    context
        Integer code of each cell's covariate context (all zeros without covariates).
    control, separator
        The control label and the combination separator.
    """
    codes, uniques = pd.factorize(np.asarray(labels, dtype=object))
    canon = pd.Index([canonical_label(str(u), control, separator) for u in uniques])
    lab_codes, lab_names = pd.factorize(canon)
    lab = lab_codes[codes]  # canonical label code of each cell
    ctx = pd.factorize(np.asarray(context))[0]
    n_lab = len(lab_names)
    pairs = np.unique(ctx.astype(np.int64) * n_lab + lab)
    has = np.zeros((int(ctx.max()) + 1 if len(ctx) else 0, n_lab), bool)
    has[pairs // n_lab, pairs % n_lab] = True
    is_ctrl = np.asarray(lab_names == control)
    perturbed = has[:, ~is_ctrl]
    everything = perturbed.any(0)
    with_control = has[:, is_ctrl].any(1)
    return int((with_control & (perturbed != everything).any(1)).sum())


def default_source_noise(source: str, held_out_contexts: bool) -> float:
    """``FlowConfig.source_noise=None`` resolved: 0.1 for a control-source model, 0.5 for a
    noise-source model (which does not use it: the value earlier versions stored).

    ``held_out_contexts`` no longer changes the value. Until 2026-12-04 a control-source model
    fitted with held-out contexts used 0.5; with the current generator 0.1 gave the default a
    lower energy distance on every held-out context measured (five glioblastoma patients and
    Kang CD4T; benchmarks/archive/RESULTS.md, session 28), as it already did on seen contexts.
    """
    del held_out_contexts  # kept for callers of the earlier signature
    return 0.1 if source == "control" else 0.5


def default_time_sampling(source: str, held_out_contexts: bool) -> str:
    """``FlowConfig.time_sampling=None`` resolved: ``"uniform"`` for a control-source model
    fitted with held-out contexts (:func:`contexts_lacking_perturbations`), else
    ``"logit_normal"``.

    Transporting control cells to a context the model has not seen perturbed, uniform times
    (which train the start of the path, near the source cell, as often as its middle) gave the
    generator alone a higher Pearson Δ on all seven held-out Kang 2018 cell types and a lower
    energy distance on five, and the default its figures of before on the held-out
    glioblastoma patients; the default's energy distance on Kang rose on six of seven cell
    types (by 0.03–0.07), as the generated cells' spread around the estimated mean narrowed;
    with the spread calibrated (``SamplingConfig(spread="auto")``, the default for such
    models) it is lower than with logit-normal times on all seven
    (benchmarks/archive/RESULTS.md, session 31). Elsewhere logit-normal times are kept: on
    the seen glioblastoma cells, a complete design, uniform times raised the default's energy
    distance (same log); other designs were not measured.
    """
    return "uniform" if source == "control" and held_out_contexts else "logit_normal"


def resolve_precision(precision: str, accelerator: str) -> str:
    """``"auto"`` → bf16 mixed precision where the hardware multiplies bf16 natively (a GPU
    that supports it; a CPU with AMX or AVX-512 BF16, :func:`cpu_has_fast_bf16`), else fp32.

    Mixed precision keeps fp32 weights, optimiser state, norms, softmax and loss; the matrix
    products run in bf16. On the 2-core AMX CPU this trains the ``small`` preset faster at the
    same quality (``benchmarks/run.py speed`` and the quality suite).
    """
    if precision != "auto":
        return precision
    use_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_gpu:
        return "bf16-mixed" if bf16_supported("cuda") else "32-true"
    return "bf16-mixed" if bf16_supported("cpu") else "32-true"


#: Shortest planned run that ``TrainConfig.compile="auto"`` compiles: compilation takes tens of
#: seconds on a CPU, repaid by faster steps only over runs of about this length or more.
COMPILE_MIN_STEPS = 1000
#: Shortest wall-time budget (``TrainConfig.max_minutes``) under which ``compile="auto"``
#: compiles: compiling would take a large share of a shorter one.
COMPILE_MIN_MINUTES = 10.0


def resolve_compile(compile_: bool | str, max_steps: int, accelerator: str,
                    max_minutes: float | None = None) -> bool:
    """Whether to train with a ``torch.compile``-d velocity network.

    ``True`` / ``False`` are obeyed; ``"auto"`` compiles runs of at least
    :data:`COMPILE_MIN_STEPS` steps on Linux where the backend's tool chain is present (a C++
    compiler for CPUs, Triton for CUDA GPUs), unless a wall-time budget shorter than
    :data:`COMPILE_MIN_MINUTES` is set. ``torch.compile`` fuses the many small
    elementwise operations of a small DiT (norms, modulation, activations) that dominate once
    the matrix products run in bf16.
    """
    if compile_ is not True and compile_ is not False:
        if max_steps < COMPILE_MIN_STEPS or not sys.platform.startswith("linux"):
            return False
        if max_minutes is not None and max_minutes < COMPILE_MIN_MINUTES:
            return False
        use_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        if use_gpu:
            return importlib.util.find_spec("triton") is not None
        return any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    return bool(compile_)


def resolve_strategy(strategy: str, devices: int = 1, num_nodes: int = 1) -> str:
    """Lightning strategy of a run: ``"auto"`` on several devices or nodes is ``"ddp"``
    (data parallel: one copy of the network per device, gradients averaged); others as given."""
    if strategy == "auto" and int(devices) * int(num_nodes) > 1:
        return "ddp"
    return strategy


def train_field(field: VelocityField, tokenizer, train_ds: CellDataset | StreamedTrainingSet,
                val_ds: CellDataset | None,
                *, dit: DiTConfig, flow: FlowConfig, train: TrainConfig, verbose: bool = True,
                checkpoint: StepCheckpoint | None = None, resume_from: str | None = None,
                covariate_dropout: float = 0.0, held_out_contexts: bool = True) -> TrainResult:
    """Train ``field`` with :class:`FlowModule` and return its best EMA weights.

    ``checkpoint`` (a :class:`StepCheckpoint`) writes complete checkpoints every N steps;
    ``resume_from`` (a checkpoint file of the same run, e.g. ``checkpoint.path``) continues that
    run: weights, EMA, optimiser, schedule, step, random states and the loader's position are
    restored, so that the run ends as an uninterrupted one would (bitwise on CPU). Batches,
    noise, times and dropout are drawn from generators seeded by ``train.seed``.

    Several devices (``train.devices`` × ``train.num_nodes`` > 1) train with Lightning's
    data-parallel strategy (``train.strategy``; ``"auto"``: ``"ddp"``, which on CPUs uses the
    gloo backend): every process holds the whole network, takes its own share of each epoch's
    batches (:class:`EpochBatchSampler`; the effective batch is ``batch_size`` × processes),
    draws its own noise, times and dropout (seeded from ``train.seed`` and its rank) and the
    gradients are averaged, so that every process ends with the same weights, EMA and best
    state. With ``"ddp"`` Lightning runs the calling script again in a new process for each
    further device (torchrun and SLURM start them instead); a script should save its outputs in
    one process only (:func:`is_global_zero`). ``"ddp_spawn"`` starts the processes from this
    one (the script needs an ``if __name__ == "__main__":`` guard) and the result is handed
    back to it. One device runs exactly as without these settings. ``"fsdp"`` is refused by
    :class:`~scdit.TrainConfig`. The minibatch OT pairing of sources and cells is computed within each
    process's batch of ``batch_size`` cells. ``held_out_contexts``: whether the
    training data has held-out contexts (it sets a control-source model's default length,
    :func:`auto_max_steps`, and, where ``flow.time_sampling`` is ``None``, its time sampler,
    :func:`default_time_sampling`).
    """
    streamed = isinstance(train_ds, StreamedTrainingSet)  # on-disk cells, read as they train
    n_cells = train_ds.n_cells if streamed else len(train_ds)
    max_steps = train.max_steps or auto_max_steps(n_cells, train.batch_size, flow.source,
                                                  held_out_contexts)
    precision = resolve_precision(train.precision, train.accelerator)
    compiled = resolve_compile(train.compile, max_steps, train.accelerator,
                               train.max_minutes)
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = FlowModule(
        field, tokenizer, lr=train.lr, weight_decay=train.weight_decay,
        warmup_steps=min(train.warmup_steps, max_steps // 5), max_steps=max_steps,
        ema_decay=train.ema_decay, cond_dropout=dit.cond_dropout,
        time_sampling=flow.time_sampling or default_time_sampling(flow.source,
                                                                  held_out_contexts),
        logit_mean=flow.logit_mean, logit_std=flow.logit_std,
        val_seed=train.seed, source=flow.source,
        source_noise=default_source_noise(flow.source, held_out_contexts)
        if flow.source_noise is None else flow.source_noise,
        covariate_dropout=covariate_dropout, compile_field=compiled, seed=train.seed,
        pairing=flow.pairing,
    )
    if streamed:
        train_loader = StreamLoader(train_ds, seed=train.seed,
                                    num_workers=train.loader_workers)
    else:
        train_loader = ResumableLoader(train_ds, train.batch_size, shuffle=True, seed=train.seed,
                                       drop_last=True)
    budget = TimeBudget(train.max_minutes, verbose=verbose) if train.max_minutes else None
    callbacks: list = [budget] if budget else []
    val_loader = None
    if val_ds is not None and len(val_ds) > 0:
        val_loader = eval_loader(val_ds, 1024)
        callbacks.append(EarlyStopping("val_loss", patience=train.patience, mode="min",
                                       check_finite=True))
    if checkpoint is not None:
        callbacks.append(checkpoint)
    strategy = resolve_strategy(train.strategy, train.devices, train.num_nodes)
    spawned = _SpawnResults(verbose) if strategy == "ddp_spawn" else None
    if spawned is not None:
        callbacks.append(spawned)
    steps_per_epoch = len(train_loader)
    with _quiet(verbose):
        trainer = L.Trainer(
            max_steps=max_steps, max_epochs=-1, accelerator=train.accelerator,
            devices=train.devices, num_nodes=train.num_nodes, strategy=strategy,
            use_distributed_sampler=False,  # the loaders shard by rank themselves
            precision=precision, gradient_clip_val=train.grad_clip, callbacks=callbacks,
            val_check_interval=min(train.val_every, max_steps) if val_loader else None,
            check_val_every_n_epoch=None if val_loader else 1,
            limit_val_batches=1.0 if val_loader else 0, num_sanity_val_steps=0,
            enable_progress_bar=verbose, enable_model_summary=False, logger=False,
            enable_checkpointing=False, deterministic=False,
            log_every_n_steps=max(1, min(50, steps_per_epoch)),
            max_time={"minutes": train.max_minutes} if train.max_minutes else None,
        )
        t0 = time.perf_counter()
        with spawned.sharing() if spawned is not None else contextlib.nullcontext():
            trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from,
                        weights_only=True if resume_from else None)
    seconds = time.perf_counter() - t0
    steps = int(trainer.global_step)
    if spawned is not None:  # this process did not train: take rank 0's results
        steps = spawned.restore(module, budget)
    planned = (budget.shortened_to if budget else None) or max_steps
    stopped = bool(train.max_minutes) and steps < planned \
        and seconds >= 60.0 * train.max_minutes * 0.98
    if stopped:
        warnings.warn(f"training hit the {train.max_minutes:g}-minute limit after "
                      f"{steps} of {planned} steps, before the time budget "
                      "could shorten the schedule (the learning rate had not decayed); raise "
                      "max_minutes or lower max_steps.", RuntimeWarning, stacklevel=2)
    return TrainResult(field=module.final_field(), steps=steps, seconds=seconds,
                       best_val_loss=module.best_val, history=module.history,
                       precision=precision, accelerator=str(trainer.accelerator.__class__.__name__),
                       max_steps=max_steps, compiled=compiled,
                       budget_steps=budget.shortened_to if budget else None,
                       stopped_by_time=stopped)


class _SpawnResults(Callback):
    """With ``"ddp_spawn"``: hand what Lightning does not send back (the EMA, best validated
    state, history, step count, time budget) from rank 0 to the process that started the run.

    Lightning returns rank 0's network weights to the main process, not the module's other
    attributes; rank 0 writes them to a temporary file at the end of training, and
    :meth:`restore` loads them into the main process's module.
    """

    def __init__(self, verbose: bool = True):
        self.path = Path(tempfile.mkdtemp(prefix="scdit-spawn-")) / "results.pt"
        self.verbose = verbose

    def __setstate__(self, state: dict) -> None:
        # unpickled in each started process, before Lightning sets it up: as quiet as asked
        self.__dict__.update(state)
        if not self.verbose:
            _quiet(False).__enter__()  # for the rest of the process (it ends with the run)

    @staticmethod
    @contextlib.contextmanager
    def sharing():
        """Send tensors to the new processes through files while they start.

        Pickling a torch generator (the loaders hold some) shares its state as a temporary
        tensor; with torch's default file-descriptor sharing a later tensor can reuse the freed
        descriptor, and starting the process fails (``bad value(s) in fds_to_keep``).
        """
        import torch.multiprocessing as mp

        before = mp.get_sharing_strategy()
        mp.set_sharing_strategy("file_system")
        try:
            yield
        finally:
            mp.set_sharing_strategy(before)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
        torch.save({**pl_module.training_state(), "step": int(trainer.global_step),
                    "budget": None if budget is None else budget.shortened_to}, self.path)

    def restore(self, module: FlowModule, budget: TimeBudget | None) -> int:
        """Load rank 0's results into ``module`` (and ``budget``); the number of steps trained."""
        if not self.path.exists():
            raise RuntimeError("training with strategy='ddp_spawn' ended without the results of "
                               "rank 0; the processes may have failed (see their output).")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        finally:
            shutil.rmtree(self.path.parent, ignore_errors=True)
        module.load_training_state(state)
        if budget is not None:
            budget.shortened_to = state["budget"]
        return int(state["step"])


class _quiet:
    """Silence Lightning's info logs and routine warnings (unless verbose)."""

    def __init__(self, verbose: bool):
        self.verbose = verbose

    def __enter__(self):
        self._levels = {}
        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(logging.WARNING if self.verbose else logging.ERROR)
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=".*TPU available.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*validation_step.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*litlogger.*")
        # several devices: every process computes the same validation loss, no need to sync it
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
        return self

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        return False
