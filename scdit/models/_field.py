"""Velocity field = condition encoder + backbone (DiT or MLP), with the call signature the flow
code expects."""

from __future__ import annotations

import torch
from torch import nn

from ..conditions import ConditionEncoder
from ._marks import TargetMarks


class VelocityField(nn.Module):
    """``v(x, t, cond)`` where ``cond`` is a dict with ``atoms``, ``covariates``, ``drop`` and
    optionally ``dose``.

    ``dit`` is the backbone: a :class:`~scdit.models.DiT` or a :class:`~scdit.models.MLPVelocity`
    (any module mapping tokens ``(B, T, P)``, times ``(B,)`` and the encoder's conditioning
    ``(B, hidden)`` to ``(B, T, P)``); its weights are saved under ``dit.*`` either way.
    With ``marks`` (a :class:`~scdit.models.TargetMarks`) the velocity of each cell's targeted
    genes is corrected by the marks' shared head, from ``cond["atoms"]``; the correction does
    not depend on ``cond["drop"]``, so the unconditional model of classifier-free guidance
    still knows which gene is targeted. The head does not read ``cond["dose"]``: a dosed
    genetic perturbation gets the same on-target correction at every dose.

    Parameters
    ----------
    dit
        The backbone.
    encoder
        The condition encoder (perturbation atoms, covariates, dose, label dropout).
    marks
        Optional target-marks head; ``None`` (the default, and every model without gene
        targets) leaves the backbone's velocity as it is.
    """

    def __init__(self, dit: nn.Module, encoder: ConditionEncoder, marks: TargetMarks | None = None):
        super().__init__()
        self.dit = dit
        self.encoder = encoder
        self.marks = marks

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Velocity at tokens ``x`` ``(B, T, P)`` and times ``t`` ``(B,)``, shape ``(B, T, P)``.

        Parameters
        ----------
        x
            Tokens.
        t
            Flow times (0 data, 1 source).
        cond
            ``atoms`` ``(B, M)`` (0 = padding) and, each optional, ``covariates`` ``(B, K)``,
            ``drop`` ``(B,)`` (True: unconditional) and ``dose`` ``(B, M)``.

        Returns
        -------
        torch.Tensor
            The backbone's velocity, corrected at targeted genes when the field has marks.
        """
        c = self.encoder(cond["atoms"], cond.get("covariates"), cond.get("drop"),
                         cond.get("dose"))  # (B, D)
        v = self.dit(x, t, c)  # (B, T, P)
        return v if self.marks is None else self.marks(v, x, t, cond["atoms"])
