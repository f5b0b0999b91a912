"""The MLP backbone (scdit.models.MLPVelocity): same interface as the DiT, no attention."""

from __future__ import annotations

import pytest
import torch

import scdit
from scdit.conditions import ConditionEncoder
from scdit.models import DiT, MLPVelocity, VelocityField, dit_parameter_count

T, P, G, D = 6, 3, 16, 32  # tokens, patch size, genes (2 padded slots), hidden


def make_mlp(seed: int = 0) -> MLPVelocity:
    torch.manual_seed(seed)
    return MLPVelocity(T, P, G, hidden_size=D, depth=2)


def randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Random values in every parameter (so the zero-initialised layers no longer hide the rest)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def inputs(b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, T, P, generator=g), torch.rand(b, generator=g),
            torch.randn(b, D, generator=g))


def test_fresh_mlp_outputs_exact_zeros_but_has_gradients():
    mlp = make_mlp()
    x, t, c = inputs()
    out = mlp(x, t, c)
    assert out.shape == (5, T, P)
    assert torch.count_nonzero(out) == 0
    (out - torch.randn_like(out)).pow(2).mean().backward()
    assert mlp.out.weight.grad.abs().sum() > 0 and mlp.out.bias.grad.abs().sum() > 0


def test_trained_like_mlp_depends_on_state_time_and_condition():
    mlp = make_mlp()
    randomise(mlp)
    x, t, c = inputs()
    out = mlp(x, t, c)
    assert out.shape == (5, T, P) and torch.count_nonzero(out) > 0
    assert not torch.allclose(out, mlp(x, t, c.flip(0)))  # the conditioning matters
    assert not torch.allclose(out, mlp(x, t * 0.5, c))  # time matters
    assert not torch.allclose(out, mlp(x + 1.0, t, c))  # state matters
    # a cell's velocity depends on its own inputs only (no mixing across the batch)
    # (up to float32 rounding: the matmul kernels block a batch of 2 differently from one of 5)
    torch.testing.assert_close(mlp(x[:2], t[:2], c[:2]), out[:2], rtol=1e-4, atol=1e-4)


def test_padded_slots_are_ignored():
    mlp = make_mlp()
    randomise(mlp)
    x, t, c = inputs()
    noisy = x.reshape(5, -1).clone()
    noisy[:, G:] = 100.0  # the last T * P - G slots are padding
    torch.testing.assert_close(mlp(noisy.reshape(5, T, P), t, c), mlp(x, t, c))


def test_mlp_in_a_velocity_field_follows_the_condition():
    torch.manual_seed(0)
    field = VelocityField(MLPVelocity(T, P, G, hidden_size=D, depth=2),
                          ConditionEncoder(n_atoms=4, covariate_sizes=[3], hidden=D))
    randomise(field)
    x, t, _ = inputs(3)
    cond = {"atoms": torch.tensor([[1, 0], [2, 0], [1, 2]]),
            "covariates": torch.tensor([[1], [1], [2]])}
    out = field(x, t, cond)
    other = {**cond, "atoms": torch.tensor([[3, 0], [3, 0], [3, 0]])}
    assert not torch.allclose(out, field(x, t, other))


@pytest.mark.parametrize(("preset", "n_genes"), [("tiny", 500), ("small", 500), ("small", 2000)])
def test_width_matches_the_dit_parameter_count(preset, n_genes):
    d = scdit.config.DIT_PRESETS[preset]
    n_tokens = d.max_tokens
    patch = -(-n_genes // n_tokens)
    dit = DiT(n_tokens, patch, n_genes, d.hidden_size, d.depth, d.num_heads, d.mlp_ratio)
    mlp = MLPVelocity(n_tokens, patch, n_genes, d.hidden_size, d.depth, mlp_ratio=d.mlp_ratio)
    n_dit = sum(p.numel() for p in dit.parameters())
    n_mlp = sum(p.numel() for p in mlp.parameters())
    # the closed form the width is solved from is the DiT's count (a change of the DiT shows here;
    # the closed form itself must not change, or saved MLP models get another width)
    assert dit_parameter_count(n_tokens * patch, d.hidden_size, d.depth, d.mlp_ratio) == n_dit
    assert 0.9 * n_dit < n_mlp <= n_dit
    assert mlp.width % 8 == 0 and mlp.width >= d.hidden_size


def test_explicit_width():
    mlp = MLPVelocity(T, P, G, hidden_size=D, depth=3, width=24)
    assert mlp.width == 24 and mlp.out.weight.shape == (T * P, 24) and len(mlp.mlps) == 3


@pytest.mark.parametrize("name", ["transformer", "MLP", ""])
def test_unknown_backbone_is_refused(name):
    with pytest.raises(ValueError, match=r"DiTConfig.backbone = .* is not a backbone; choose "
                                         r"from \['dit', 'mlp'\]"):
        scdit.DiTConfig(backbone=name)
