"""Composition of member velocity fields for combinations (score composition)."""

from __future__ import annotations

import torch

from scdit.flow import composed, guided


def _field(x, t, cond):
    # a toy field whose value depends on the atoms, so compositions are distinguishable
    shift = cond["atoms"].float().sum(1, keepdim=True)[:, :, None]  # (B, 1, 1)
    return x * 0.5 + shift + t[:, None, None]


def test_composed_is_weighted_sum():
    x = torch.randn(4, 3, 2)
    t = torch.rand(4)
    a = {"atoms": torch.tensor([[1, 0]] * 4)}
    b = {"atoms": torch.tensor([[2, 0]] * 4)}
    c = {"atoms": torch.zeros(4, 1, dtype=torch.long)}
    va, vb, vc = (guided(_field, cond, 1.0) for cond in (a, b, c))
    v = composed([(va, 1.0), (vb, 1.0), (vc, -1.0)])
    expected = va(x, t) + vb(x, t) - vc(x, t)
    assert torch.allclose(v(x, t), expected)
