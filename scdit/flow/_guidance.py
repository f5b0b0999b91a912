"""Classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable

import torch


def guided(field: Callable, cond: dict[str, torch.Tensor], scale: float) -> Callable:
    """Return ``v(x, t)`` = ``v_null + scale * (v_cond - v_null)``.

    ``scale == 1`` is exactly the conditional field (the unconditional branch is not evaluated);
    ``scale == 0`` is the unconditional field.
    """
    n = cond["atoms"].shape[0]
    keep = torch.zeros(n, dtype=torch.bool, device=cond["atoms"].device)
    cond_c = {**cond, "drop": keep}
    if scale == 1.0:
        return lambda x, t: field(x, t, cond_c)
    both = {k: torch.cat([v, v]) for k, v in cond.items() if k != "drop"}
    both["drop"] = torch.cat([keep, ~keep])

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = field(torch.cat([x, x]), torch.cat([t, t]), both)  # (2B, ...)
        v_c, v_u = out[:n], out[n:]
        return v_u + scale * (v_c - v_u)

    return v


def composed(terms: list[tuple[Callable, float]]) -> Callable:
    """Weighted sum of velocity fields ``Σ w_i v_i(x, t)``.

    With ``v_A + v_B - v_control`` this is the rectified-flow form of composing scores
    (product of experts, Liu et al. 2022 "Compositional visual generation"): for the linear
    path from Gaussian noise the velocity is affine in the score with coefficients that depend
    only on ``(x, t)``, so weights summing to one compose the scores exactly.
    """

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = None
        for field, w in terms:
            term = w * field(x, t)
            out = term if out is None else out + term
        return out

    return v
