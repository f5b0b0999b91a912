"""Velocity field = condition encoder + backbone (DiT or MLP), with the call signature the flow
code expects."""

from __future__ import annotations

import torch
from torch import nn

from ..conditions import ConditionEncoder


class VelocityField(nn.Module):
    """``v(x, t, cond)`` where ``cond`` is a dict with ``atoms``, ``covariates``, ``drop`` and
    optionally ``dose``.

    ``dit`` is the backbone: a :class:`~scdit.models.DiT` or a :class:`~scdit.models.MLPVelocity`
    (any module mapping tokens ``(B, T, P)``, times ``(B,)`` and the encoder's conditioning
    ``(B, hidden)`` to ``(B, T, P)``); its weights are saved under ``dit.*`` either way.
    """

    def __init__(self, dit: nn.Module, encoder: ConditionEncoder):
        super().__init__()
        self.dit = dit
        self.encoder = encoder

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """x ``(B, T, P)``, t ``(B,)`` → velocity ``(B, T, P)``."""
        c = self.encoder(cond["atoms"], cond.get("covariates"), cond.get("drop"),
                         cond.get("dose"))  # (B, D)
        return self.dit(x, t, c)  # (B, T, P)
