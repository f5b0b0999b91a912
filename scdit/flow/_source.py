"""Sources of the flow (``t = 1``): Gaussian noise, or control cells paired by minibatch OT."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal tensor shaped like ``x``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` minimising ``Σ ||x0[i] - x1[perm[i]]||²`` (exact, Hungarian).

    Used to pair data and source samples within a minibatch (Tong et al., 2023; Pooladian et
    al., 2023), which straightens the learned paths.
    """
    cost = torch.cdist(x0.reshape(len(x0), -1).float(), x1.reshape(len(x1), -1).float()) ** 2
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(np.asarray(cols), device=x0.device)
