"""Condition encoder: perturbations (order-free combinations, null token for CFG) + covariates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConditionEncoder(nn.Module):
    """Map perturbation atoms and covariates to one conditioning vector.

    A condition is a set of atoms (``(B, M)`` indices, 0 = padding). Member embeddings are
    summed (order-free, so ``A+B`` equals ``B+A`` and a double starts as the sum of its singles),
    a learned control vector is added for cells with no atom, and an MLP maps the pooled vector to
    the hidden size. A learned null vector replaces it where ``drop`` is true (classifier-free
    guidance). Covariate embeddings (one table per key, index 0 reserved) are added.
    """

    def __init__(self, n_atoms: int, covariate_sizes: Sequence[int], hidden: int):
        super().__init__()
        self.atoms = nn.Embedding(n_atoms + 1, hidden, padding_idx=0)
        self.control = nn.Parameter(torch.zeros(hidden))
        self.null = nn.Parameter(torch.zeros(hidden))
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.covariates = nn.ModuleList(nn.Embedding(n, hidden) for n in covariate_sizes)
        nn.init.normal_(self.atoms.weight, std=0.5)
        with torch.no_grad():
            self.atoms.weight[0].zero_()
        nn.init.normal_(self.control, std=0.5)
        nn.init.normal_(self.null, std=0.02)
        for emb in self.covariates:
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, atoms: torch.Tensor, covariates: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """atoms ``(B, M)``, covariates ``(B, K)``, drop ``(B,)`` bool → ``(B, hidden)``."""
        pooled = self.atoms(atoms).sum(1)  # (B, D)
        is_control = (atoms == 0).all(1, keepdim=True)  # (B, 1)
        pooled = pooled + is_control.to(pooled.dtype) * self.control  # (B, D)
        c = self.mlp(pooled)  # (B, D)
        if drop is not None:
            c = torch.where(drop[:, None], self.null.to(c.dtype).expand_as(c), c)  # (B, D)
        if covariates is not None:
            for j, emb in enumerate(self.covariates):
                c = c + emb(covariates[:, j])  # (B, D)
        return c
