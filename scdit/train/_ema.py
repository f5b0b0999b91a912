"""Exponential moving average of weights, with a warm-up of the decay."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """EMA copy of a module; decay ramps as ``min(decay, (1 + n) / (10 + n))`` over updates ``n``."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.n_updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the EMA weights towards ``module``'s."""
        d = min(self.decay, (1 + self.n_updates) / (10 + self.n_updates))
        ema = list(self.module.parameters())
        cur = [p.detach().to(e.dtype) for p, e in zip(module.parameters(), ema, strict=True)]
        torch._foreach_lerp_(ema, cur, 1.0 - d)
        self.n_updates += 1
