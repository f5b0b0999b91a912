"""The rectified-flow path: ``t = 0`` is data ``x0``, ``t = 1`` is the source ``x1``."""

from __future__ import annotations

import torch


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = t * x1 + (1 - t) * x0`` with ``t`` of shape ``(B,)`` broadcast over the rest."""
    tt = t.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)  # (B, 1, ...)
    return tt * x1 + (1 - tt) * x0


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The regression target ``v = x1 - x0`` (``dx_t/dt``)."""
    return x1 - x0
