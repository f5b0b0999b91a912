"""Training-time samplers for ``t``: uniform and logit-normal (Esser et al., 2024)."""

from __future__ import annotations

from collections.abc import Callable

import torch

TimeSampler = Callable[[int, torch.Generator | None, torch.device], torch.Tensor]


def uniform(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``t ~ U(0, 1)``, shape ``(n,)``."""
    return torch.rand(n, generator=generator, device=device)


def logit_normal(n: int, generator: torch.Generator | None = None, device=None, *,
                 mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``t = sigmoid(N(mean, std²))``: more samples at intermediate times."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))


def get_time_sampler(name: str, *, mean: float = 0.0, std: float = 1.0) -> TimeSampler:
    """Time sampler by name (``"uniform"`` or ``"logit_normal"``)."""
    if name == "uniform":
        return uniform
    if name == "logit_normal":
        return lambda n, g=None, d=None: logit_normal(n, g, d, mean=mean, std=std)
    raise ValueError(f"Unknown time_sampling {name!r}; use 'uniform' or 'logit_normal'.")
