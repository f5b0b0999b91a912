"""Embeddings: sinusoidal time embedding and gene-patch token embedding."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of scalar times ``t`` (shape ``(B,)``) → ``(B, dim)``.

    Times in ``[0, 1]`` are scaled by 1000 so that the frequencies span the usual range.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (H,)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, H)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2H)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features followed by a two-layer MLP (SiLU)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)`` → ``(B, hidden)``."""
        return self.mlp(sinusoidal_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class GeneTokenEmbed(nn.Module):
    """Token = Σ over the genes of a patch of (value × gene value-vector + gene identity vector).

    Each gene ``g`` owns a value vector ``w_g`` and an identity vector ``e_g`` (both ``hidden``);
    padded gene slots are masked out.
    """

    def __init__(self, n_tokens: int, patch_size: int, hidden: int, n_genes: int):
        super().__init__()
        self.value = nn.Parameter(torch.empty(n_tokens, patch_size, hidden))
        self.identity = nn.Parameter(torch.empty(n_tokens, patch_size, hidden))
        mask = torch.zeros(n_tokens * patch_size)
        mask[:n_genes] = 1.0
        self.register_buffer("mask", mask.reshape(n_tokens, patch_size, 1), persistent=False)
        nn.init.normal_(self.value, std=1.0 / math.sqrt(patch_size))
        nn.init.normal_(self.identity, std=0.02)

    @torch.no_grad()
    def init_identity(self, features) -> None:
        """Initialise the identity vectors from per-slot features ``(n_slots, d)`` (e.g. genes).

        The standardised features are projected onto their top principal directions (up to
        ``hidden`` of them; zero-padded when ``d < hidden``) and scaled to the default
        initialisation's standard deviation (0.02); slots beyond ``n_slots`` stay as they are.
        """
        F = torch.as_tensor(features, dtype=torch.float64)  # (S, d)
        T, P, D = self.identity.shape
        if F.ndim != 2 or F.shape[0] > T * P:
            raise ValueError(f"features must be (≤ {T * P}, d), got {tuple(F.shape)}.")
        F = F - F.mean(0)
        u, s, _ = torch.linalg.svd(F, full_matrices=False)
        proj = (u * s)[:, :D]  # (S, min(d, S, D))
        emb = torch.zeros(F.shape[0], D, dtype=torch.float64)
        emb[:, : proj.shape[1]] = proj
        sd = emb.std()
        if sd > 0:
            emb = emb / sd * 0.02
        flat = self.identity.data.reshape(T * P, D)
        flat[: F.shape[0]] = emb.to(flat.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, P)`` → ``(B, T, D)``."""
        w = self.value * self.mask  # (T, P, D)
        ident = (self.identity * self.mask).sum(1)  # (T, D)
        return torch.einsum("btp,tpd->btd", x, w) + ident  # (B, T, D)
