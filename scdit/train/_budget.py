"""Fit the training length to a wall-time budget, keeping the learning-rate schedule whole."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class TimeBudget(Callback):
    """Shorten a run that would overrun ``minutes`` so that its schedule still finishes.

    Lightning's ``max_time`` stops training wherever the budget runs out, possibly early in the
    cosine decay (at a high learning rate), which gave worse models than a shorter complete run
    (benchmarks/archive/RESULTS.md, doubles cut at 1,287 of 2,000 steps). This callback measures the
    time per step (validation included) from step ``probe[0]`` on, or since the previous check
    if that is slower. At step ``probe[1]`` and every ``check_every`` steps after it, it sets the
    run's length (``module.max_steps``, which the schedule reads, and Lightning's step limit) to
    what fits in ``margin`` of the remaining budget, and with ``verbose`` says so the first
    time. It only ever shortens a run; ``shortened_to`` records the new length. Runs that fit
    the budget are untouched (and so stay reproducible). With several processes, global rank
    0's decision is broadcast, so that every process trains the same number of steps.
    """

    def __init__(self, minutes: float, *, probe: tuple[int, int] = (10, 50),
                 check_every: int = 250, margin: float = 0.9, verbose: bool = False):
        self.budget_s = 60.0 * float(minutes)
        self.probe = probe
        self.check_every = int(check_every)
        self.margin = float(margin)
        self.shortened_to: int | None = None
        self.verbose = verbose
        self._start: float | None = None
        self._t0: float | None = None
        self._last: tuple[int, float] | None = None
        self._resumed: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        resumed, self._resumed = self._resumed, None
        if resumed is None:
            self._start = now
            return
        # a resumed run: the budget counts the time trained before the interruption
        self._start = now - resumed["elapsed"]
        self._t0 = None if resumed["since_t0"] is None else now - resumed["since_t0"]
        self._last = None if resumed["last"] is None else \
            (int(resumed["last"][0]), now - float(resumed["last"][1]))
        if self.shortened_to is not None:
            pl_module.max_steps = self.shortened_to
            trainer.fit_loop.epoch_loop.max_steps = self.shortened_to

    def state_dict(self) -> dict:
        """Training time so far (seconds since the start, the probe and the last check) and the
        shortened length, for checkpoints."""
        now = time.perf_counter()
        return {"elapsed": 0.0 if self._start is None else now - self._start,
                "since_t0": None if self._t0 is None else now - self._t0,
                "last": None if self._last is None else (self._last[0], now - self._last[1]),
                "shortened_to": self.shortened_to}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue a budget saved by :meth:`state_dict` (applied when training starts)."""
        self.shortened_to = state_dict["shortened_to"]
        self._resumed = state_dict

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        now = time.perf_counter()
        if step == self.probe[0]:
            self._t0 = now
            return
        due = step == self.probe[1] or (step > self.probe[1] and step % self.check_every == 0)
        if self._t0 is None or self._start is None or not due:
            return
        per_step = (now - self._t0) / max(1, step - self.probe[0])
        if self._last is not None:  # the machine may have slowed down: trust the slower rate
            per_step = max(per_step, (now - self._last[1]) / max(1, step - self._last[0]))
        self._last = (step, now)
        remaining = self.budget_s - (now - self._start)
        fits = step + int(self.margin * max(0.0, remaining) / max(per_step, 1e-9))
        # one decision for all processes (a no-op with one): rank 0's
        new = trainer.strategy.broadcast(
            max(step + 1, fits) if fits < pl_module.max_steps else None, src=0)
        if new is not None:
            if self.verbose and self.shortened_to is None and trainer.is_global_zero:
                print(f"scdit: at {per_step:.2f} s per step, {pl_module.max_steps} steps would "
                      f"overrun the {self.budget_s / 60:g}-minute budget; training {new} steps "
                      "(max_minutes=None or a larger value trains longer)", flush=True)
            pl_module.max_steps = new
            trainer.fit_loop.epoch_loop.max_steps = new
            self.shortened_to = new
