"""TargetMarks: which slots a perturbation targets, and a head that changes only those."""

from __future__ import annotations

import pytest
import torch

from scdit.models import TargetMarks, target_slots


def _marks() -> TargetMarks:
    torch.manual_seed(0)
    slots = target_slots(["B", "drugX", "D"], ["A", "B", "C", "D"])  # rows: pad, B, drugX, D
    assert slots == [-1, 1, -1, 3]
    return TargetMarks(slots, torch.tensor([-1.0, -2.0, -3.0, -4.0, 0.0, 0.0]))  # 2 padding


def test_flags_follow_the_members_and_skip_non_genes():
    m = _marks()
    atoms = torch.tensor([[0, 0], [1, 0], [2, 0], [1, 3], [2, 3]])  # ctrl, B, drugX, B+D, X+D
    flags = m.flags(atoms)
    expected = torch.zeros(5, 6)
    expected[1, 1] = expected[3, 1] = expected[3, 3] = expected[4, 3] = 1
    assert torch.equal(flags, expected)
    assert m.n_marked == 2


def test_head_starts_at_zero_then_changes_only_targeted_slots():
    m = _marks()
    atoms = torch.tensor([[0, 0], [1, 0], [1, 3], [2, 0]])
    x, v, t = torch.randn(4, 2, 3), torch.randn(4, 2, 3), torch.rand(4)
    assert torch.equal(m(v, x, t, atoms), v)  # zero-initialised last layer
    torch.nn.init.normal_(m.head[-1].weight)
    torch.nn.init.normal_(m.head[-1].bias)
    out = m(v, x, t, atoms)
    changed = (out != v).reshape(4, -1)
    assert changed[1].nonzero().ravel().tolist() == [1]
    assert changed[2].nonzero().ravel().tolist() == [1, 3]
    assert not changed[0].any() and not changed[3].any()  # control; a drug is not a gene
    # the same head for every gene: a cell targeting D with B's inputs moves by B's amount
    x2, v2 = x.clone(), v.clone()
    x2.reshape(4, -1)[1, 3], v2.reshape(4, -1)[1, 3] = x.reshape(4, -1)[1, 1], v.reshape(4, -1)[1, 1]
    m.floor[3] = m.floor[1]
    d = m(v2, x2, t, torch.tensor([[0, 0], [3, 0], [0, 0], [0, 0]])) - v2
    assert torch.allclose(d.reshape(4, -1)[1, 3], (out - v).reshape(4, -1)[1, 1])


def test_bad_slots_are_refused():
    with pytest.raises(ValueError, match=r"slot indices in \[0, 4\)"):
        TargetMarks([-1, 4], torch.zeros(4))


def test_head_reads_float32_inputs_under_bf16():
    """Under bf16 autocast, with a bf16 backbone velocity, the head reads the tokens and the
    time exactly, in float32, and runs in float32."""
    m = _marks()
    torch.nn.init.normal_(m.head[-1].weight)
    atoms = torch.tensor([[1, 3], [3, 0]])
    x, t = torch.randn(2, 2, 3) * 3, torch.rand(2)  # not exactly representable in bf16
    vb = (torch.randn(2, 2, 3) * 3).bfloat16()
    seen = {}
    hooks = [m.head[0].register_forward_pre_hook(lambda mod, a: seen.update(feats=a[0])),
             m.head[-1].register_forward_hook(lambda mod, a, out: seen.update(out=out))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outb = m(vb, x, t, atoms)
    for h in hooks:
        h.remove()
    assert outb.dtype == torch.bfloat16
    feats, idx = seen["feats"], torch.tensor([[1, 3], [3, 0]])  # padding reads slot 0
    assert feats.dtype == torch.float32 and seen["out"].dtype == torch.float32
    assert torch.equal(feats[..., 0], x.reshape(2, -1).gather(1, idx))  # not rounded to bf16
    assert torch.equal(feats[..., 3], vb.float().reshape(2, -1).gather(1, idx))
    assert torch.equal(feats[..., 4], t[:, None].expand(2, 2))
