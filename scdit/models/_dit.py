"""The Diffusion Transformer velocity network."""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import DiTBlock, FinalLayer
from ._embed import GeneTokenEmbed, TimestepEmbedder


class DiT(nn.Module):
    """DiT over gene-patch tokens predicting the rectified-flow velocity.

    ``forward(x, t, c)`` takes tokens ``(B, T, P)``, times ``(B,)`` and a conditioning vector
    ``(B, hidden_size)`` (from :class:`scdit.conditions.ConditionEncoder`), returns ``(B, T, P)``.

    Parameters
    ----------
    n_tokens, patch_size, n_genes
        Token layout from the tokenizer.
    hidden_size, depth, num_heads, mlp_ratio
        Transformer size (see :data:`scdit.config.DIT_PRESETS`).
    activation
        GELU of the blocks' MLPs: ``"gelu"`` (exact) or ``"gelu_tanh"``.
    """

    def __init__(self, n_tokens: int, patch_size: int, n_genes: int, hidden_size: int = 128,
                 depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 activation: str = "gelu"):
        super().__init__()
        self.embed = GeneTokenEmbed(n_tokens, patch_size, hidden_size, n_genes)
        self.t_embed = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, activation) for _ in range(depth)
        )
        self.final = FinalLayer(hidden_size, n_tokens, patch_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, small time-MLP weights, zero adaLN modulation and zero output layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Velocity ``(B, T, P)`` at tokens ``x`` ``(B, T, P)``, time ``t`` ``(B,)``, cond ``(B, D)``."""
        h = self.embed(x)  # (B, T, D)
        c = c + self.t_embed(t)  # (B, D)
        for block in self.blocks:
            h = block(h, c)  # (B, T, D)
        return self.final(h, c)  # (B, T, P)
