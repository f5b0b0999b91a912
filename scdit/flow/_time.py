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


def uniform_end(n: int, generator: torch.Generator | None = None, device=None, *,
                p_end: float = 0.5) -> torch.Tensor:
    """``t = 1`` with probability ``p_end``, else ``t ~ U(0, 1)``; shape ``(n,)``.

    For reflow (:func:`scdit.reflow`): every few-step Euler solve starts with the velocity at
    ``t = 1``, and one step uses nothing else, so half the samples train exactly there.
    """
    t = torch.rand(n, generator=generator, device=device)
    end = torch.rand(n, generator=generator, device=device) < p_end
    return torch.where(end, torch.ones_like(t), t)


def get_time_sampler(name: str, *, mean: float = 0.0, std: float = 1.0) -> TimeSampler:
    """Time sampler by name (``"uniform"``, ``"logit_normal"`` or ``"uniform_end"``)."""
    if name == "uniform":
        return uniform
    if name == "uniform_end":
        return uniform_end
    if name == "logit_normal":
        return lambda n, g=None, d=None: logit_normal(n, g, d, mean=mean, std=std)
    raise ValueError(f"Unknown time_sampling {name!r}; use 'uniform', 'logit_normal' or "
                     "'uniform_end'.")
