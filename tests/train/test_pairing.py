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


def test_group_ids_of_noise_batches_use_covariates():
    batch = {"covariates": torch.tensor([[1, 2], [1, 2], [1, 3], [2, 2]]),
             "atoms": torch.tensor([[1], [1], [1], [1]])}
    g = group_ids(batch)
    assert g[0] == g[1] and len(torch.unique(g)) == 3


def _module(pairing: str, source: str = "noise"):
    from scdit.train import FlowModule

    return FlowModule(torch.nn.Linear(3, 3), None, lr=1e-3, weight_decay=0.0, warmup_steps=1,
                      max_steps=10, ema_decay=0.9, cond_dropout=0.0, time_sampling="uniform",
                      source=source, pairing=pairing)


def test_noise_source_ot_pairing_permutes_draws_within_condition_groups():
    torch.manual_seed(1)
    x0 = torch.randn(10, 2, 3) + 3.0
    atoms = torch.tensor([[1]] * 5 + [[2]] * 5)
    batch = {"atoms": atoms, "covariates": torch.zeros(10, 0, dtype=torch.long)}
    plain = _module("independent")._source(x0, batch, torch.Generator().manual_seed(5))
    paired = _module("ot")._source(x0, batch, torch.Generator().manual_seed(5))
    assert not torch.equal(plain, paired)
    for grp in (slice(0, 5), slice(5, 10)):  # the same Gaussian draws, partners changed in-group
        a = sorted(map(tuple, plain[grp].reshape(5, -1).tolist()))
        b = sorted(map(tuple, paired[grp].reshape(5, -1).tolist()))
        assert a == b
    cost = lambda y: ((x0 - y) ** 2).sum()  # noqa: E731
    assert cost(paired) < cost(plain)


def test_pairing_is_checked():
    import pytest

    from scdit import FlowConfig

    with pytest.raises(ValueError, match="pairing"):
        FlowConfig(pairing="sinkhorn")
    with pytest.raises(ValueError, match="pairing"):
        _module("random")


def test_control_source_pairs_the_cells_then_adds_noise():
    """A control source: OT over the control cells' tokens, the source noise added after."""
    from scdit.flow import noise_like

    m = _module("ot", source="control")
    m.source_noise = 0.1
    m.tokenizer = type("Identity", (), {"encode": staticmethod(lambda x: x)})()
    torch.manual_seed(2)
    x0, src = torch.randn(8, 2, 3), torch.randn(8, 2, 3)
    batch = {"x_src": src, "ctx": torch.tensor([0] * 4 + [1] * 4),
             "atoms": torch.tensor([[1]] * 8), "covariates": torch.zeros(8, 1, dtype=torch.long)}
    got = m._source(x0, batch, torch.Generator().manual_seed(3))
    paired = pair_within_groups(x0, src, group_ids(batch))
    want = paired + 0.1 * noise_like(paired, torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


def test_fit_trains_with_the_pairing_it_is_given(counts_adata):
    import scdit

    kw = {"preset": "tiny", "max_steps": 4, "seed": 0, "verbose": False}
    models = {p: scdit.fit(counts_adata, "condition", flow={"pairing": p}, **kw)
              for p in ("ot", "independent")}
    assert [m.config.flow.pairing for m in models.values()] == ["ot", "independent"]
    a, b = (m.field.state_dict() for m in models.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)
