"""DiT, blocks, embeddings and the velocity field (scdit.models)."""

from __future__ import annotations

import pytest
import torch

from scdit.conditions import ConditionEncoder
from scdit.models import DiT, DiTBlock, GeneTokenEmbed, VelocityField, sinusoidal_embedding

T, P, G, D = 6, 3, 16, 32  # tokens, patch size, genes (2 padded slots), hidden


def make_field(seed: int = 0, covariate_sizes=(3,)) -> VelocityField:
    torch.manual_seed(seed)
    dit = DiT(T, P, G, hidden_size=D, depth=2, num_heads=2)
    return VelocityField(dit, ConditionEncoder(n_atoms=4, covariate_sizes=list(covariate_sizes),
                                               hidden=D))


def batch(b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, P, generator=g)
    t = torch.rand(b, generator=g)
    cond = {"atoms": torch.tensor([[1, 2], [2, 1], [3, 0], [0, 0], [4, 0]])[:b],
            "covariates": torch.tensor([[1], [2], [1], [2], [0]])[:b]}
    return x, t, cond


def randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter random values (so zero-initialised layers no longer hide the rest)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_fresh_dit_outputs_exact_zeros():
    torch.manual_seed(0)
    dit = DiT(T, P, G, hidden_size=D, depth=2, num_heads=2)
    x, t, _ = batch()
    out = dit(x, t, torch.randn(5, D))
    assert out.shape == (5, T, P)
    assert torch.count_nonzero(out) == 0


def test_fresh_velocity_field_outputs_exact_zeros_but_has_gradients():
    field = make_field()
    x, t, cond = batch()
    out = field(x, t, {**cond, "drop": torch.tensor([True, False, False, True, False])})
    assert out.shape == (5, T, P) and torch.count_nonzero(out) == 0
    # zero init must not block learning: the output layer receives a gradient
    (out - torch.randn_like(out)).pow(2).mean().backward()
    assert field.dit.final.weight.grad.abs().sum() > 0
    assert field.dit.final.bias.grad.abs().sum() > 0


def test_fresh_dit_blocks_are_identity():
    """adaLN-Zero: ``DiT.initialize_weights`` zeroes every block's modulation (gates included)."""
    torch.manual_seed(0)
    dit = DiT(T, P, G, hidden_size=D, depth=2, num_heads=2)
    h = torch.randn(4, T, D)
    for block in dit.blocks:
        torch.testing.assert_close(block(h, torch.randn(4, D)), h, rtol=0, atol=0)
    # a standalone block is not zero-initialised: the test above can fail
    assert not torch.allclose(DiTBlock(D, 2)(h, torch.randn(4, D)), h)


def test_trained_like_field_depends_on_inputs():
    field = make_field()
    randomise(field)
    x, t, cond = batch()
    out = field(x, t, cond)
    assert torch.count_nonzero(out) > 0
    assert not torch.allclose(out, field(x, t * 0.5, cond))  # time matters
    assert not torch.allclose(out, field(x + 1.0, t, cond))  # state matters
    other = {**cond, "covariates": cond["covariates"].flip(0)}
    assert not torch.allclose(out, field(x, t, other))  # covariates matter


def test_gene_token_embed_masks_padded_slots():
    torch.manual_seed(0)
    emb = GeneTokenEmbed(T, P, D, G)  # T*P = 18 slots, 16 genes: last token has 2 padded slots
    x = torch.randn(2, T, P)
    y = x.clone()
    y[:, -1, 1:] += 100.0
    torch.testing.assert_close(emb(x), emb(y))
    y[:, -1, 0] += 1.0  # a real gene
    assert not torch.allclose(emb(x), emb(y))


def test_sinusoidal_embedding():
    t = torch.tensor([0.0, 0.5, 1.0])
    e = sinusoidal_embedding(t, 9)
    assert e.shape == (3, 9)
    assert torch.all(e[:, -1] == 0)  # odd dim padded
    assert not torch.allclose(e[0], e[1]) and not torch.allclose(e[1], e[2])
    torch.testing.assert_close(e[0, :4], torch.ones(4))  # cos(0) = 1


def test_attention_requires_divisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        DiT(T, P, G, hidden_size=30, depth=1, num_heads=4)


def test_velocity_field_combination_order_free():
    field = make_field()
    randomise(field)
    x, t, _ = batch(2)
    c1 = {"atoms": torch.tensor([[1, 3], [2, 4]]), "covariates": torch.tensor([[1], [2]])}
    c2 = {"atoms": torch.tensor([[3, 1], [4, 2]]), "covariates": torch.tensor([[1], [2]])}
    torch.testing.assert_close(field(x, t, c1), field(x, t, c2), rtol=0, atol=1e-6)


def test_cpu_attention_product_equals_the_fused_kernel():
    """On CPUs the attention is the explicit softmax(q kᵀ/√d) v: the same function as PyTorch's
    scaled-dot-product kernel."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    att = DiTBlock(32, 4).attn
    x = torch.randn(5, 7, 32)
    qkv = att.qkv(x).reshape(5, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)
    ref = att.proj(F.scaled_dot_product_attention(*qkv).transpose(1, 2).reshape(5, 7, 32))
    torch.testing.assert_close(att(x), ref, rtol=1e-5, atol=1e-6)


def test_activation_is_configurable_and_old_files_read_as_tanh_gelu():
    import scdit

    blocks = DiT(4, 3, 12, hidden_size=16, depth=1, num_heads=2, activation="gelu_tanh").blocks
    assert blocks[0].mlp[1].approximate == "tanh"
    assert DiT(4, 3, 12, hidden_size=16, depth=1, num_heads=2).blocks[0].mlp[1].approximate \
        == "none"
    old = {"data": {"condition_key": "c", "control": "ctrl"}, "dit": {"hidden_size": 32}}
    assert scdit.ScDiTConfig.from_dict(old).dit.activation == "gelu_tanh"
    new = scdit.ScDiTConfig(data=scdit.DataConfig(condition_key="c", control="ctrl")).to_dict()
    assert scdit.ScDiTConfig.from_dict(new).dit.activation == "gelu"
    with pytest.raises(ValueError, match="activation"):
        scdit.DiTConfig(activation="relu")
