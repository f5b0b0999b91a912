"""A plain MLP velocity network: the attention-free alternative to the DiT (``backbone="mlp"``).

It sees the same inputs as :class:`~scdit.models.DiT` and returns the same shape, so that the two
can be compared behind one interface: what attention over gene tokens adds over a network that
reads the whole cell as one vector.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._blocks import gelu
from ._embed import TimestepEmbedder

#: Width of the sinusoidal time features (as in :class:`~scdit.models.TimestepEmbedder`).
_FREQ_DIM = 256


def dit_parameter_count(n_slots: int, hidden_size: int, depth: int, mlp_ratio: float) -> int:
    """Number of parameters of a :class:`~scdit.models.DiT` with ``n_slots = n_tokens *
    patch_size`` value slots (a closed form; the condition encoder is not counted).

    Parameters
    ----------
    n_slots
        Tokens × patch size.
    hidden_size, depth, mlp_ratio
        The DiT's size.

    Returns
    -------
    int
        Gene embeddings ``2 S D``, time MLP, ``depth`` blocks (adaLN ``6 D``, attention ``4 D``,
        MLP with ``int(D * mlp_ratio)`` inner units) and the final layer (adaLN ``2 D``, a
        per-slot output weight and bias).
    """
    s, d, inner = n_slots, hidden_size, int(hidden_size * mlp_ratio)
    time_mlp = _FREQ_DIM * d + d + d * d + d
    block = (d * 6 * d + 6 * d) + (d * 3 * d + 3 * d) + (d * d + d) \
        + (d * inner + inner + inner * d + d)
    final = d * 2 * d + 2 * d + s * d + s
    return 2 * s * d + time_mlp + depth * block + final


class MLPVelocity(nn.Module):
    """Residual MLP over the whole cell vector, conditioned by adaLN-Zero modulation.

    The tokens ``(B, T, P)`` are flattened to a cell vector of ``T * P`` values (padded slots
    masked), projected to ``width`` units and passed through ``depth`` residual blocks. Each block
    normalises its input, shifts and scales it by amounts computed from the conditioning (time +
    condition, ``(B, hidden_size)``), applies ``Linear(width, width) → GELU → Linear(width,
    width)`` and adds the result times a gate, also computed from the conditioning. The gates and
    the output layer start at zero, so a fresh network is the identity in every block and predicts
    a zero velocity. No attention and no gene tokens: every value interacts with every other
    through dense layers only.

    The time embedding is the DiT's (:class:`~scdit.models.TimestepEmbedder`, added to ``c``).
    ``forward(x, t, c)`` takes tokens ``(B, T, P)``, times ``(B,)`` and a conditioning vector
    ``(B, hidden_size)``, returns ``(B, T, P)``.

    Parameters
    ----------
    n_tokens, patch_size, n_genes
        Token layout from the tokenizer (``n_genes`` real value slots, the rest padding).
    hidden_size
        Width of the conditioning vector ``c`` (the condition encoder's output).
    depth
        Number of residual blocks.
    width
        Units of the residual stream; ``None`` picks :meth:`matched_width` for ``mlp_ratio``.
    mlp_ratio
        Only used to pick ``width`` when it is ``None`` (the DiT this one is sized against).
    activation
        GELU of the blocks: ``"gelu"`` (exact) or ``"gelu_tanh"``.
    """

    def __init__(self, n_tokens: int, patch_size: int, n_genes: int, hidden_size: int = 128,
                 depth: int = 4, width: int | None = None, mlp_ratio: float = 4.0,
                 activation: str = "gelu"):
        super().__init__()
        if width is None:
            width = self.matched_width(n_tokens, patch_size, hidden_size, depth, mlp_ratio)
        self.shape = (n_tokens, patch_size)
        self.width = width
        n_slots = n_tokens * patch_size
        mask = torch.zeros(n_slots)
        mask[:n_genes] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        self.t_embed = TimestepEmbedder(hidden_size, _FREQ_DIM)
        self.inp = nn.Linear(n_slots, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
                                   for _ in range(depth + 1))
        self.ada = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * width))
                                 for _ in range(depth))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(width, width), gelu(activation),
                                                nn.Linear(width, width)) for _ in range(depth))
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * width))
        self.out = nn.Linear(width, n_slots)
        self.initialize_weights()

    @staticmethod
    def matched_width(n_tokens: int, patch_size: int, hidden_size: int, depth: int,
                      mlp_ratio: float) -> int:
        """Residual width whose MLP has about as many parameters as the DiT of the same size.

        Solves ``count(width) = DiT count`` (:func:`dit_parameter_count`, same token layout,
        ``hidden_size``, ``depth`` and ``mlp_ratio``) for the MLP's count ``2 depth width² +
        width (2 S + 3 + depth (3 hidden + 5) + 2 hidden) + S + time MLP`` and rounds down to a
        multiple of 8 (at least 8). The width is a pure function of these sizes, so a saved
        model is rebuilt with the width it was trained with.
        """
        s, d = n_tokens * patch_size, hidden_size
        target = dit_parameter_count(s, d, depth, mlp_ratio)
        time_mlp = _FREQ_DIM * d + d + d * d + d
        a = 2 * depth
        b = 2 * s + 3 + depth * (3 * d + 5) + 2 * d
        c = s + time_mlp - target
        root = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        return max(8, int(root) // 8 * 8)

    def initialize_weights(self) -> None:
        """Xavier linears, small time-MLP weights, zero modulation (gates) and zero output layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for lin in [a[-1] for a in self.ada] + [self.final_ada[-1], self.out]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Velocity ``(B, T, P)`` at tokens ``x`` ``(B, T, P)``, time ``t`` ``(B,)``, cond ``(B, D)``."""
        b = x.shape[0]
        h = self.inp(x.reshape(b, -1) * self.mask)  # (B, W)
        c = c + self.t_embed(t)  # (B, D)
        for norm, ada, mlp in zip(self.norms, self.ada, self.mlps, strict=False):
            shift, scale, gate = ada(c).chunk(3, dim=-1)  # each (B, W)
            h = h + gate * mlp(norm(h) * (1 + scale) + shift)  # (B, W)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)  # (B, W)
        h = self.norms[-1](h) * (1 + scale) + shift  # (B, W)
        return self.out(h).reshape(b, *self.shape)  # (B, T, P)
