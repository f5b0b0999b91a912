"""Condition encoder: order-free combinations, null token, feature-only atoms."""

from __future__ import annotations

import numpy as np
import torch

from scdit.conditions import ConditionEncoder


def randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter random values (so zero-initialised layers no longer hide the rest)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_condition_encoder_is_order_free():
    torch.manual_seed(0)
    enc = ConditionEncoder(5, [3], 16)
    randomise(enc.mlp)
    a = enc(torch.tensor([[1, 2], [3, 0]]), torch.tensor([[1], [2]]))
    b = enc(torch.tensor([[2, 1], [0, 3]]), torch.tensor([[1], [2]]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    triple_1 = enc(torch.tensor([[1, 2, 3]]))
    triple_2 = enc(torch.tensor([[3, 1, 2]]))
    torch.testing.assert_close(triple_1, triple_2, rtol=0, atol=1e-6)


def test_condition_encoder_distinguishes_conditions_and_null():
    torch.manual_seed(0)
    enc = ConditionEncoder(5, [3], 16)
    atoms = torch.tensor([[0, 0], [1, 0], [2, 0], [1, 2]])
    covs = torch.ones(4, 1, dtype=torch.long)
    c = enc(atoms, covs)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(c[i], c[j]), (i, j)
    dropped = enc(atoms, covs, torch.ones(4, dtype=torch.bool))
    # every dropped row is the same null vector (plus the same covariate embedding)
    torch.testing.assert_close(dropped, dropped[:1].expand_as(dropped))
    torch.testing.assert_close(dropped[0], enc.null + enc.covariates[0].weight[1])
    # partial drop only replaces the flagged rows
    partial = enc(atoms, covs, torch.tensor([False, True, False, False]))
    torch.testing.assert_close(partial[[0, 2, 3]], c[[0, 2, 3]])
    torch.testing.assert_close(partial[1], dropped[1])
    # covariates shift the vector
    assert not torch.allclose(c, enc(atoms, covs + 1))


def test_encoder_feature_only_rows_and_residual():
    feats = np.eye(4, 3, dtype=np.float32)  # 2 seen + 2 feature-only atoms
    enc = ConditionEncoder(2, [], 8, features=feats, residual_dropout=0.5).eval()
    atoms = torch.tensor([[1], [3], [0]])
    out = enc.member_embeddings(atoms)
    assert out.shape == (3, 1, 8)
    assert torch.all(out[2] == 0)  # padding
    # a feature-only atom has no residual: its embedding is the projection alone
    proj = enc.proj(enc.features[3])
    assert torch.allclose(out[1, 0], proj)
    c = enc(atoms)
    assert c.shape == (3, 8)


def test_residual_dropout_spares_atoms_without_features():
    """In training, only atoms with a feature row lose their own embedding now and then; an
    atom whose row is all zero (e.g. a target that is not a measured gene) always keeps it."""
    feats = np.zeros((3, 3), dtype=np.float32)  # rows: atoms 1..3 (padding added by the encoder)
    feats[0] = [1.0, 0.5, -0.2]  # atom 1 has features, atom 2 has none
    torch.manual_seed(0)
    enc = ConditionEncoder(3, [], 8, features=feats, residual_dropout=0.5).train()
    torch.nn.init.normal_(enc.atoms.weight)
    atoms = torch.tensor([[1], [2]]).repeat(200, 1)  # (400, 1)
    out = enc.member_embeddings(atoms)[:, 0]
    with_res_1 = enc.proj(enc.features[1]) + enc.atoms.weight[1]
    full_1 = torch.isclose(out[0::2], with_res_1.expand(200, -1)).all(1)
    assert 0.3 < full_1.float().mean() < 0.7  # atom 1: residual dropped about half the time
    with_res_2 = enc.proj(enc.features[2]) + enc.atoms.weight[2]
    torch.testing.assert_close(out[1::2], with_res_2.expand(200, -1))  # atom 2: always kept


def test_atoms_without_features_start_at_the_scale_of_a_model_without_features():
    """A seen atom whose feature row is all zero has only its residual to tell it apart: it
    starts at the scale of a model without features (std 0.5), featured atoms at 0.1."""
    feats = np.zeros((40, 3), dtype=np.float32)
    feats[:20] = np.random.default_rng(0).normal(size=(20, 3))
    torch.manual_seed(0)
    w = ConditionEncoder(40, [], 64, features=feats).atoms.weight[1:].detach()
    assert 0.085 < float(w[:20].std()) < 0.115
    assert 0.43 < float(w[20:].std()) < 0.57
    torch.manual_seed(0)  # every row featured: the same draws, none rescaled
    plain = ConditionEncoder(40, [], 64, features=np.ones((40, 3), np.float32)).atoms.weight
    torch.testing.assert_close(plain[1:21].detach(), w[:20], rtol=0, atol=0)
    torch.testing.assert_close(5 * plain[21:].detach(), w[20:])
