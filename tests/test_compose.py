"""Composition of member velocity fields for combinations (score composition)."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_compose_zero_equals_joint_and_auto_rules(counts_model):
    m = counts_model
    kw = dict(n_cells=20, covariates={"cell_type": "T"}, seed=3)
    joint = m.predict("G1+G2", compose=0.0, **kw)
    auto = m.predict("G1+G2", **kw)  # G1+G2 was seen in training → joint condition
    assert np.array_equal(joint.X.toarray(), auto.X.toarray())
    composed_pred = m.predict("G1+G2", compose=1.0, **kw)
    assert not np.array_equal(joint.X.toarray(), composed_pred.X.toarray())
    # unseen combination of seen singles → composition by default
    assert m._compose_weight("G2+G3", None) == pytest.approx(1.0)
    assert m._compose_weight("G3+G2", 0.25) == pytest.approx(0.25)
    assert m._compose_weight("G2+G1", None) == 0.0
    out = m.predict("G3+G2", **kw)
    assert out.n_obs == 20 and out.uns["scdit"]["compose"] == "auto"
