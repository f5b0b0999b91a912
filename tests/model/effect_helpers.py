"""Shared helpers of the effects tests: reference token means and decoded means of a model."""

from __future__ import annotations

import numpy as np
import torch


def reference_token_mean(model, label: str, cell_type: str) -> torch.Tensor:
    """Mean token of the stored training cells of ``label`` in ``cell_type``, computed here."""
    obs = model.reference.obs
    rows = np.flatnonzero((obs.condition.astype(str) == label).to_numpy()
                          & (obs.cell_type.astype(str) == cell_type).to_numpy())
    return model.encode(model.reference[rows]).double().mean(0)


def decoded_target(model, token_mean: torch.Tensor) -> torch.Tensor:
    """log1p mean that a token mean ``(T, P)`` stands for: unclipped decode, then clipped at 0
    (anchoring matches the *decoded* mean of the output to this)."""
    tk = model.tokenizer
    u = token_mean.reshape(-1)[:tk.n_genes].double() * tk.std.double() + tk.mean.double()
    return u.clamp_min(0.0)


def decoded_mean(model, tokens) -> torch.Tensor:
    return model.tokenizer.decode(torch.as_tensor(tokens).float()).double().mean(0)


def assert_constant_shift(a: torch.Tensor, b: torch.Tensor) -> None:
    """``a - b`` is the same for every cell: the spread is the model's."""
    d = (torch.as_tensor(a) - torch.as_tensor(b)).double()
    torch.testing.assert_close(d - d.mean(0), torch.zeros_like(d), atol=1e-4, rtol=0)
