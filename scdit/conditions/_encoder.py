"""Condition encoder: perturbations (order-free combinations, features, dose, null token for CFG)
plus covariates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class ConditionEncoder(nn.Module):
    """Map perturbation atoms, their doses and covariates to one conditioning vector.

    A condition is a set of atoms (``(B, M)`` indices, 0 = padding). Rows ``1..n_atoms`` are the
    perturbations seen in training; rows above that are perturbations known only through their
    features. Each member's embedding is

    ``e(a) = proj(features[a]) + residual[a]`` (features, when given) or ``residual[a]``,

    where ``residual`` is a learned table for the seen perturbations (zero for feature-only
    rows). During training the residual is dropped with probability ``residual_dropout`` so that
    the feature projection alone must describe each perturbation: that is what lets an unseen
    perturbation with features land in the right place. With a dose, the member embedding is
    scaled elementwise by ``1 + g(log1p(dose) - log1p(1))`` (``g`` a small MLP starting at 0, so
    dose 1 leaves it unchanged). Members are summed (order-free: ``A+B`` equals ``B+A``), a
    learned control vector is added for cells with no atom, and an MLP maps the pooled vector to
    the hidden size. A learned null vector replaces it where ``drop`` is true (classifier-free
    guidance). Covariate embeddings (one table per key, index 0 reserved) are added.

    Parameters
    ----------
    n_atoms
        Perturbations seen in training (rows of the learned residual table).
    covariate_sizes
        Table size of each covariate (categories + 1).
    hidden
        Width of the conditioning vector.
    features
        Optional ``(n_rows, F)`` feature table, row ``i`` for atom index ``i + 1``
        (``n_rows ≥ n_atoms``: seen atoms first, then feature-only atoms).
    residual_dropout
        Probability of dropping a member's residual in training (only with ``features``).
    use_dose
        Whether the encoder takes doses.
    """

    def __init__(self, n_atoms: int, covariate_sizes: Sequence[int], hidden: int, *,
                 features: np.ndarray | torch.Tensor | None = None, residual_dropout: float = 0.0,
                 use_dose: bool = False):
        super().__init__()
        self.n_atoms = int(n_atoms)
        self.atoms = nn.Embedding(self.n_atoms + 1, hidden, padding_idx=0)
        self.control = nn.Parameter(torch.zeros(hidden))
        self.null = nn.Parameter(torch.zeros(hidden))
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.covariates = nn.ModuleList(nn.Embedding(n, hidden) for n in covariate_sizes)
        self.residual_dropout = float(residual_dropout)
        if features is not None:
            feats = torch.as_tensor(np.asarray(features, dtype=np.float32))
            if feats.ndim != 2 or feats.shape[0] < self.n_atoms:
                raise ValueError(f"features must be (n_rows >= {self.n_atoms}, F); got "
                                 f"{tuple(feats.shape)}.")
            table = torch.cat([torch.zeros(1, feats.shape[1]), feats])  # (1 + n_rows, F)
            self.register_buffer("features", table)
            self.proj = nn.Sequential(nn.Linear(feats.shape[1], hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden))
        else:
            self.features = None
            self.proj = None
        self.dose = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden)) \
            if use_dose else None
        nn.init.normal_(self.atoms.weight, std=0.5 if features is None else 0.1)
        with torch.no_grad():
            self.atoms.weight[0].zero_()
            if self.features is not None:  # seen atoms without features (all-zero row) rely
                # on their residual alone: give it the scale of a model without features
                bare = self.features[1:self.n_atoms + 1].abs().sum(-1) == 0  # (n_atoms,)
                self.atoms.weight[1:] *= (1 + 4 * bare.to(self.atoms.weight.dtype))[:, None]
        nn.init.normal_(self.control, std=0.5)
        nn.init.normal_(self.null, std=0.02)
        for emb in self.covariates:
            nn.init.normal_(emb.weight, std=0.02)
        if self.dose is not None:
            nn.init.zeros_(self.dose[-1].weight)
            nn.init.zeros_(self.dose[-1].bias)

    @property
    def n_rows(self) -> int:
        """Number of addressable atoms (seen + feature-only)."""
        return self.n_atoms if self.features is None else self.features.shape[0] - 1

    def member_embeddings(self, atoms: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        """Per-member embeddings ``(B, M, D)`` (zero for padding)."""
        seen = atoms <= self.n_atoms  # (B, M)
        res = self.atoms(torch.where(seen, atoms, torch.zeros_like(atoms)))  # (B, M, D)
        if self.proj is not None:
            if self.training and self.residual_dropout > 0:
                # only atoms with a feature row learn to do without their own embedding; the
                # others (all-zero row: e.g. a target that is not a measured gene) keep it
                featured = self.features[atoms].abs().sum(-1) > 0  # (B, M)
                keep = (torch.rand(atoms.shape, device=atoms.device) >= self.residual_dropout) \
                    | ~featured
                res = res * keep[..., None].to(res.dtype)
            f = self.proj(self.features[atoms])  # (B, M, D)
            e = (f + res) * (atoms > 0)[..., None].to(f.dtype)
        else:
            e = res
        if self.dose is not None and dose is not None:
            d = torch.log1p(dose.clamp_min(0).to(e.dtype))[..., None] - float(np.log(2.0))
            e = e * (1 + self.dose(d))  # (B, M, D)
        return e

    def forward(self, atoms: torch.Tensor, covariates: torch.Tensor | None = None,
                drop: torch.Tensor | None = None, dose: torch.Tensor | None = None) -> torch.Tensor:
        """atoms ``(B, M)``, covariates ``(B, K)``, drop ``(B,)`` bool, dose ``(B, M)`` →
        ``(B, hidden)``."""
        pooled = self.member_embeddings(atoms, dose).sum(1)  # (B, D)
        is_control = (atoms == 0).all(1, keepdim=True)  # (B, 1)
        pooled = pooled + is_control.to(pooled.dtype) * self.control  # (B, D)
        c = self.mlp(pooled)  # (B, D)
        if drop is not None:
            c = torch.where(drop[:, None], self.null.to(c.dtype).expand_as(c), c)  # (B, D)
        if covariates is not None:
            for j, emb in enumerate(self.covariates):
                c = c + emb(covariates[:, j])  # (B, D)
        return c
