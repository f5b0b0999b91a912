"""Rectified-flow regression loss."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._path import interpolate, target_velocity


def flow_matching_loss(v_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``v_fn(x_t, t)`` and ``x1 - x0``."""
    xt = interpolate(x0, x1, t)  # (B, ...)
    pred = v_fn(xt, t)  # (B, ...)
    return torch.mean((pred.float() - target_velocity(x0, x1).float()) ** 2)
