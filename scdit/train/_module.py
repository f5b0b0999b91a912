"""LightningModule training a velocity field with the rectified-flow loss."""

from __future__ import annotations

import copy
import math
import warnings

import lightning as L
import numpy as np
import torch

from ..flow import flow_matching_loss, get_time_sampler, noise_like, ot_pairing
from ..models import VelocityField
from ._checkpoint import rng_state, set_rng_state
from ._dist import gather_objects, rank_and_world, seed_rank
from ._ema import EMA


class FlowModule(L.LightningModule):
    """Rectified-flow training of ``field`` on tokenised cells.

    Each step: tokens ``x0`` of a batch, source ``x1`` (Gaussian noise; with ``source="pairs"``
    the batch's own fixed pairs, for reflow; or with ``source="control"`` the tokens of control
    cells of the same context) re-paired, with ``pairing="ot"``, by exact minibatch optimal
    transport within each (context, condition) group (:func:`pair_within_groups`), after which
    a control source gets ``source_noise``-scaled Gaussian noise added; times from the
    configured sampler, condition dropout with probability ``cond_dropout`` (classifier-free
    guidance), loss ``||v(x_t, t, c) - (x1 - x0)||²``. AdamW with linear warm-up then cosine decay; an EMA
    copy is validated and kept (its best state is restored when training ends).

    On several devices (Lightning's DDP) every process reseeds the global random states from
    ``(seed, rank)`` when the fit starts, so that noise, times and dropout differ between
    processes (one process keeps the states the caller seeded). Gradients are averaged, so the
    weights, the EMA (updated after each optimiser step), the validation losses (every process
    evaluates the whole validation set with the same draws) and the best state are the same in
    every process.
    """

    def __init__(self, field: VelocityField, tokenizer, *, lr: float, weight_decay: float,
                 warmup_steps: int, max_steps: int, ema_decay: float, cond_dropout: float,
                 time_sampling: str, logit_mean: float = 0.0, logit_std: float = 1.0,
                 val_seed: int = 0, source: str = "noise", source_noise: float = 0.0,
                 covariate_dropout: float = 0.0, compile_field: bool = False, seed: int = 0,
                 pairing: str = "ot"):
        super().__init__()
        self.seed = int(seed)
        self.compile_field = bool(compile_field)
        if source not in ("noise", "control", "pairs"):
            raise ValueError(f"source must be 'noise', 'control' or 'pairs', got {source!r}.")
        if pairing not in ("ot", "independent"):
            raise ValueError(f"pairing must be 'ot' or 'independent', got {pairing!r}.")
        self.source = source
        self.pairing = pairing
        self.source_noise = float(source_noise)
        self.covariate_dropout = float(covariate_dropout)
        self.field = field
        self.tokenizer = tokenizer
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.cond_dropout = cond_dropout
        self._time_sampling = (time_sampling, float(logit_mean), float(logit_std))
        self.sample_t = get_time_sampler(time_sampling, mean=logit_mean, std=logit_std)
        self.ema = EMA(field, ema_decay)
        self.val_seed = val_seed
        self.best_val = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self._val_losses: list[torch.Tensor] = []
        self._resume_rng: dict | None = None

    def __getstate__(self) -> dict:
        # pickled to start processes ("ddp_spawn"): the time sampler may be a closure and the
        # compiled forward is a function; both are rebuilt in the new process
        state = dict(super().__getstate__())
        state.pop("sample_t", None)
        state.pop("_compiled", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        name, mean, std = self._time_sampling
        self.sample_t = get_time_sampler(name, mean=mean, std=std)

    def _loss(self, field, batch, generator=None) -> torch.Tensor:
        if self.source == "pairs":  # reflow: fixed (cell, source) pairs, already tokens
            x0, x1 = batch["x0"], batch["x1"]  # (B, T, P)
        else:
            x0 = self.tokenizer.encode(batch["x"])  # (B, T, P)
            x1 = self._source(x0, batch, generator)  # (B, T, P)
        b = x0.shape[0]
        t = self.sample_t(b, generator, x0.device)  # (B,)
        if generator is None and self.training:
            drop = torch.rand(b, device=x0.device) < self.cond_dropout  # (B,)
        else:
            drop = torch.zeros(b, dtype=torch.bool, device=x0.device)
        covs = batch["covariates"]
        if self.covariate_dropout > 0 and generator is None and self.training and covs.shape[1]:
            keep = torch.rand(b, device=x0.device) >= self.covariate_dropout  # (B,)
            covs = covs * keep[:, None].to(covs.dtype)  # index 0 = "context not given"
        cond = {"atoms": batch["atoms"], "covariates": covs, "drop": drop}
        if "dose" in batch:
            cond["dose"] = batch["dose"]
        return flow_matching_loss(lambda x, tt: field(x, tt, cond), x0, x1, t)

    def _source(self, x0: torch.Tensor, batch, generator) -> torch.Tensor:
        """Source draws ``x1`` for cells ``x0``: noise, or control cells plus noise; re-paired
        within (context, condition) groups with ``pairing="ot"``."""
        control = self.source == "control"
        x1 = self.tokenizer.encode(batch["x_src"]) if control else noise_like(x0, generator)
        if self.pairing == "ot":  # (B, T, P); a control source's added noise is not paired
            x1 = pair_within_groups(x0, x1, group_ids(batch))
        if control and self.source_noise > 0:
            x1 = x1 + self.source_noise * noise_like(x1, generator)
        return x1

    def training_step(self, batch, batch_idx):
        if not self.compile_field or self.__dict__.get("_compiled_ran"):
            loss = self._loss(self._train_field(), batch)
        else:  # first compiled step: a tool chain that fails to compile falls back to eager
            try:
                loss = self._loss(self._train_field(), batch)
                self.__dict__["_compiled_ran"] = True
            except Exception as err:  # noqa: BLE001 - any compiler failure
                warnings.warn(f"torch.compile of the velocity network failed ({type(err).__name__}:"
                              f" {str(err).splitlines()[0] if str(err) else ''}); training "
                              "continues without compiling (TrainConfig(compile=False) skips "
                              "the attempt).", RuntimeWarning, stacklevel=2)
                self.compile_field = False
                loss = self._loss(self.field, batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True,
                 batch_size=len(batch["x0" if self.source == "pairs" else "x"]))
        return loss

    def _train_field(self):
        """The field's forward for training steps: compiled with ``torch.compile`` when
        ``compile_field`` (the same weights: the compiled function is kept outside the module's
        state, so checkpoints and the EMA see the plain field)."""
        if not self.compile_field:
            return self.field
        if "_compiled" not in self.__dict__:  # not an attribute nn.Module would register
            self.__dict__["_compiled"] = torch.compile(self.field.forward, dynamic=False)
        return self.__dict__["_compiled"]

    def on_fit_start(self) -> None:
        rank, world = rank_and_world()
        if world > 1:
            # a process started by pickling ("ddp_spawn") maps the EMA weights in memory shared
            # with the other processes (torch.multiprocessing): it updates its own copy
            self.ema.module = copy.deepcopy(self.ema.module)
            seed_rank(self.seed, rank)  # processes draw different noise, times and dropout
        self.ema.module.to(self.device)

    def optimizer_step(self, *args, **kwargs) -> None:
        # the EMA follows each optimiser step here rather than in ``on_train_batch_end``, which
        # runs after the callbacks': a checkpoint written at a step's end then holds its update
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.field)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._resume_rng is not None:  # first step after a resume: the saved random states
            set_rng_state(self._resume_rng)
            self._resume_rng = None

    def training_state(self) -> dict:
        """What a run has made besides the weights: EMA, best validated state, history, length."""
        return {"ema": self.ema.module.state_dict(), "ema_updates": self.ema.n_updates,
                "best_val": self.best_val, "best_state": self.best_state,
                "history": self.history, "max_steps": self.max_steps}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state`."""
        self.ema.module.load_state_dict(state["ema"])
        self.ema.n_updates = int(state["ema_updates"])
        self.best_val = float(state["best_val"])
        self.best_state = state["best_state"]
        self.history = [dict(h) for h in state["history"]]
        self.max_steps = int(state["max_steps"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Add what Lightning does not save: the EMA, best validated state, history, random states.

        The random states are those at the end of the checkpoint's step, which are those at the
        start of the next one (nothing between two steps draws from them: loaders and
        validation have their own generators); a resumed run restores them at its first step.
        With several processes, those of every process are gathered (``rng_by_rank``).
        """
        rng = rng_state()
        checkpoint["scdit_module"] = {**self.training_state(), "rng": rng}
        if rank_and_world()[1] > 1:
            checkpoint["scdit_module"]["rng_by_rank"] = gather_objects(rng)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` added (random states: at the next step)."""
        state = checkpoint["scdit_module"]
        self.load_training_state(state)
        rank, world = rank_and_world()
        by_rank = state.get("rng_by_rank")
        if world > 1 and (by_rank is None or len(by_rank) != world):
            raise ValueError(f"The checkpoint holds the random states of "
                             f"{1 if by_rank is None else len(by_rank)} process(es), this run has "
                             f"{world}: resume with the same devices and num_nodes.")
        self._resume_rng = by_rank[rank] if world > 1 else state["rng"]

    def on_validation_epoch_start(self) -> None:
        self._val_losses = []
        self._val_gen = torch.Generator(device=self.device).manual_seed(self.val_seed)

    def validation_step(self, batch, batch_idx):
        with torch.no_grad():
            loss = self._loss(self.ema.module, batch, generator=self._val_gen)
        n = len(batch["x0" if self.source == "pairs" else "x"])
        self._val_losses.append(loss.detach() * n)
        self._val_n = getattr(self, "_val_n", 0) + n
        return loss

    def on_validation_epoch_end(self) -> None:
        n = getattr(self, "_val_n", 0)
        self._val_n = 0
        if not self._val_losses or n == 0:
            return
        val = float(torch.stack(self._val_losses).sum() / n)
        self.log("val_loss", val, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.history.append({"step": int(self.global_step), "val_loss": val})
        if val < self.best_val:
            self.best_val = val
            self.best_state = copy.deepcopy(self.ema.module.state_dict())

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.field.named_parameters():
            table = name.startswith(("encoder.atoms", "encoder.covariates"))
            (no_decay if p.ndim < 2 or table else decay).append(p)
        # the fused kernel (one pass over all parameters rather than one per operation and
        # tensor list) where no gradient scaler ("16-mixed") unscales the gradients inside it
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.lr,
                                fused=not self._scaled())
        warm = max(1, self.warmup_steps)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            # self.max_steps is read each step: a time budget may shorten the run (TimeBudget)
            total = max(self.max_steps, 1)
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _scaled(self) -> bool:
        """Whether the trainer scales the loss (fp16 mixed precision's ``GradScaler``)."""
        trainer = self._trainer  # None outside a fit
        return getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is not None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Clip the gradients' norm to ``gradient_clip_val`` before the fused optimiser step.

        Lightning refuses to clip for fused optimisers because under a gradient scaler they
        unscale internally; without a scaler (fp32, bf16) the gradients are already unscaled.
        """
        if self._scaled():
            super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                gradient_clip_algorithm)
        elif gradient_clip_val:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, float(gradient_clip_val))
            else:  # Lightning's default, "norm"
                torch.nn.utils.clip_grad_norm_(params, float(gradient_clip_val))

    def final_field(self) -> VelocityField:
        """EMA weights from the best validation check (or the last EMA if never validated)."""
        field = copy.deepcopy(self.ema.module).cpu()
        if self.best_state is not None:
            field.load_state_dict(self.best_state)
        return field.eval()


def group_ids(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Integer id per cell of its (context, condition[, dose]) group ``(B,)``; the context is
    the batch's ``ctx`` (control-source batches) or its covariate codes."""
    ctx = batch["ctx"][:, None] if "ctx" in batch else batch["covariates"]  # (B, 1 or K)
    parts = [ctx.to(torch.float64), batch["atoms"].to(torch.float64)]
    if "dose" in batch:
        parts.append(batch["dose"].to(torch.float64))
    _, inv = torch.unique(torch.cat(parts, 1), dim=0, return_inverse=True)
    return inv


def pair_within_groups(x0: torch.Tensor, x1: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Reorder ``x1`` so that within each group it is the exact OT match of ``x0``."""
    out = x1.clone()
    ids = groups.cpu().numpy()  # one transfer: the groups are found on the CPU
    values, counts = np.unique(ids, return_counts=True)
    for g in values[counts > 1]:  # a group of one cell keeps its draw
        idx = torch.as_tensor(np.flatnonzero(ids == g), device=x1.device)
        perm = ot_pairing(x0[idx], x1[idx])
        out[idx] = x1[idx[perm]]
    return out
