"""Control-source training: OT pairing within context groups, per-context source means."""

from __future__ import annotations

import torch

from scdit.train import group_ids, pair_within_groups


def test_pair_within_groups_keeps_groups_and_lowers_cost():
    torch.manual_seed(0)
    x0 = torch.randn(12, 2, 3)
    x1 = torch.randn(12, 2, 3)
    batch = {"ctx": torch.tensor([0] * 6 + [1] * 6), "atoms": torch.tensor([[1]] * 12)}
    g = group_ids(batch)
    assert len(torch.unique(g)) == 2
    out = pair_within_groups(x0, x1, g)
    for grp in (slice(0, 6), slice(6, 12)):  # rows only move within their group
        a = sorted(map(tuple, x1[grp].reshape(6, -1).tolist()))
        b = sorted(map(tuple, out[grp].reshape(6, -1).tolist()))
        assert a == b
    cost = lambda y: ((x0 - y) ** 2).sum()  # noqa: E731
    assert cost(out) <= cost(x1) + 1e-6
