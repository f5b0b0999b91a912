"""The tokenizer protocol: how expression becomes the tokens a DiT works on, and back."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Tokenizer(Protocol):
    """Fixed (non-learned) mapping between log1p expression of selected genes and tokens.

    ``encode`` maps ``(B, n_genes)`` log1p expression of :attr:`genes` to ``(B, n_tokens,
    patch_size)`` standardised values; ``decode`` is its inverse (clipped to valid log1p values).
    """

    genes: tuple[str, ...]
    n_tokens: int
    patch_size: int

    def fit(self, X, var_names, *, required_genes=(), seed: int = 0) -> Tokenizer: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...


TOKENIZERS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a tokenizer to :data:`TOKENIZERS`."""

    def deco(cls):
        TOKENIZERS[name] = cls
        return cls

    return deco


def build_tokenizer(kind: str, **kwargs) -> Tokenizer:
    """Instantiate a registered tokenizer by name."""
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {kind!r}; available: {sorted(TOKENIZERS)}.")
    return TOKENIZERS[kind](**kwargs)
