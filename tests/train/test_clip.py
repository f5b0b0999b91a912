"""TrainConfig.grad_clip: the gradients' norm is clipped before each (fused) optimiser step."""

from __future__ import annotations

import pytest
import torch

import scdit
from tests.helpers import tiny_train


def _weights(adata, precision: str, **train) -> torch.Tensor:
    """All weights of a 6-step tiny fit (no EMA lag: ``ema_decay=0`` keeps the last weights)."""
    config = tiny_train(warmup_steps=0, ema_decay=0.0, val_every=1000, precision=precision,
                        **train)
    model = scdit.fit(adata, "condition", preset="tiny", max_steps=6, seed=0, train=config,
                      verbose=False)
    return torch.cat([p.detach().flatten() for p in model.field.parameters()])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_tiny_clip_norm_holds_the_weights(log1p_adata, precision):
    """AdamW normalises the gradients' scale away, except where they fall below its ``eps``: a
    clip norm of 1e-12 must leave the weights where they start (only the weight decay moves
    them), while a clip norm of 1 trains them."""
    start = _weights(log1p_adata, precision, lr=1e-30)  # the initial weights, for this seed
    trained = (_weights(log1p_adata, precision, lr=1e-2, grad_clip=1.0) - start).abs().sum()
    clipped = (_weights(log1p_adata, precision, lr=1e-2, grad_clip=1e-12) - start).abs().sum()
    assert trained > 0
    assert clipped < 0.05 * trained, (float(clipped), float(trained))
