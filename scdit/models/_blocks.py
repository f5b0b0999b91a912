"""DiT blocks with adaLN-Zero conditioning and the final layer (Peebles & Xie, 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` broadcast over tokens: x ``(B, T, D)``, shift/scale ``(B, D)``."""
    return x * (1 + scale[:, None]) + shift[:, None]


def gelu(activation: str) -> nn.GELU:
    """The GELU module of an activation name: ``"gelu"`` (exact) or ``"gelu_tanh"``."""
    if activation not in ("gelu", "gelu_tanh"):
        raise ValueError(f"Unknown activation {activation!r}; use 'gelu' or 'gelu_tanh'.")
    return nn.GELU(approximate="tanh" if activation == "gelu_tanh" else "none")


class Attention(nn.Module):
    """Multi-head self-attention.

    On GPUs PyTorch's fused scaled-dot-product kernel; on CPUs the explicit product
    ``softmax(q kᵀ / √d) v``, the same function: with the few tokens of a cell, its batched
    matrix products are as fast in fp32 and, under bf16 autocast, many times faster than the
    fused CPU kernel's backward pass (``benchmarks/run.py speed``).
    """

    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden_size {hidden} must be divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, T, D)``."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        if x.device.type == "cpu":
            w = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1)
            out = w.to(v.dtype) @ v  # (B, H, T, Dh); softmax in fp32 under autocast
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the conditioning vector.

    adaLN-Zero: a linear layer maps the conditioning ``c`` to shift, scale and gate for both the
    attention and MLP branches; it is zero-initialised so every block starts as the identity.
    """

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float = 4.0,
                 activation: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), gelu(activation),
                                 nn.Linear(inner, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, D)``, c ``(B, D)`` → ``(B, T, D)``."""
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # each (B, D)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, sc1))  # (B, T, D)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), s2, sc2))  # (B, T, D)


class FinalLayer(nn.Module):
    """Modulated norm, then a per-token linear map to that token's genes (zero-initialised)."""

    def __init__(self, hidden: int, n_tokens: int, patch_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.weight = nn.Parameter(torch.zeros(n_tokens, hidden, patch_size))
        self.bias = nn.Parameter(torch.zeros(n_tokens, patch_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, D)``, c ``(B, D)`` → ``(B, T, P)``."""
        shift, scale = self.ada(c).chunk(2, dim=-1)  # (B, D)
        h = modulate(self.norm(x), shift, scale)  # (B, T, D)
        return torch.einsum("btd,tdp->btp", h, self.weight) + self.bias  # (B, T, P)
