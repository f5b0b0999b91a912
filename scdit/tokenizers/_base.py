"""The tokenizer protocol: how expression becomes the tokens a DiT works on, and back.

A tokenizer has three stages:

1. ``fit`` on the training cells (log1p ``X``, and raw ``counts`` when it needs them).
2. ``prepare`` turns cells into a per-cell *model input* matrix ``(n_cells, n_features)``, once
   before training (and for source cells at predict time): selected genes, PCA scores, scVI
   latent means, ...
3. ``encode`` maps a batch of model inputs to tokens ``(B, n_tokens, patch_size)`` (cheap:
   standardise, pad, reshape); ``decode`` maps tokens back to log1p expression of
   :attr:`Tokenizer.genes`; an optional ``decode_counts`` gives counts directly.

Optional abilities are declared, not probed: :class:`BaseTokenizer` gives every one a default
(``requires_counts``, ``batch_key``, ``gene_embedding_init``, ``units()``, ``clips_output`` with
``match_decoded_mean()``, ``can_decode_counts``, ``expression_coordinates``), and a tokenizer that
has an ability overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch


@runtime_checkable
class Tokenizer(Protocol):
    """What scdit needs from a tokenizer (see the module docstring for the stages).

    Inherit from :class:`BaseTokenizer` to get the defaults of the optional abilities.

    Attributes
    ----------
    kind
        Registry name (:func:`register`), written into saved models to rebuild the tokenizer.
    genes
        Genes whose log1p expression :meth:`decode` returns (a subset of the training genes).
    n_tokens, patch_size
        Token layout: each cell is ``(n_tokens, patch_size)`` values.
    n_features
        Width of the model input from :meth:`prepare` (``≤ n_tokens * patch_size``; the rest of
        the last token is padding).
    requires_counts
        Whether ``fit``/``prepare`` need raw counts.
    batch_key
        ``obs`` column the tokenizer needs at fit and decode time (scVI's batch), or None.
    gene_embedding_init
        ``(n_genes, d)`` initial gene-identity embeddings for the DiT (user gene features), or
        None.
    clips_output
        Whether :meth:`decode` clips each coordinate's affine decode at 0 (log1p ≥ 0), so that a
        mean set on the tokens is not the decoded mean; :meth:`match_decoded_mean` restores it.
    can_decode_counts
        Whether the tokenizer has ``decode_counts(tokens, library, obs=None, generator=None)``,
        which samples counts ``(B, n_genes)`` given each cell's library size.
    expression_coordinates
        Whether the token coordinates are (standardised) log1p expression of :attr:`genes`, one
        gene per coordinate, so effects estimated on genes apply to tokens coordinate-wise.
    """

    kind: str
    genes: tuple[str, ...]
    n_tokens: int
    patch_size: int
    n_features: int
    requires_counts: bool
    batch_key: str | None
    gene_embedding_init: np.ndarray | None
    clips_output: bool
    can_decode_counts: bool
    expression_coordinates: bool

    def fit(self, X, var_names: Sequence[str], *, counts=None, obs: pd.DataFrame | None = None,
            required_genes: Sequence[str] = (), seed: int = 0) -> Tokenizer: ...

    def prepare(self, X, counts=None, obs: pd.DataFrame | None = None): ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, tokens: torch.Tensor, obs: pd.DataFrame | None = None) -> torch.Tensor: ...

    def units(self) -> np.ndarray | None: ...

    def match_decoded_mean(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...


class BaseTokenizer:
    """Defaults of the optional abilities of a :class:`Tokenizer` (none of them).

    A tokenizer class inherits from this and overrides what it has: ``requires_counts = True``
    (needs raw counts), a ``batch_key``, ``gene_embedding_init``, per-coordinate :meth:`units`,
    ``clips_output = True`` with :meth:`match_decoded_mean` and :meth:`keep_decoded_mean`,
    ``can_decode_counts = True`` with a ``decode_counts`` method,
    ``expression_coordinates = True``.
    """

    requires_counts: bool = False
    batch_key: str | None = None
    gene_embedding_init: np.ndarray | None = None
    clips_output: bool = False
    can_decode_counts: bool = False
    expression_coordinates: bool = False

    def units(self) -> np.ndarray | None:
        """Size of one token unit in the tokenizer's unstandardised features, per coordinate.

        Returns
        -------
        ``(n_tokens * patch_size,)`` float64: the feature scale of each coordinate (log1p
        expression for genes, PC scores, scVI latent units), 1 for padding; None (the default)
        when the tokens are not a per-coordinate standardisation of features.
        """
        return None

    def match_decoded_mean(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens whose decoded mean equals their mean before clipping (``clips_output``).

        The default (a tokenizer that does not clip per coordinate) returns ``tokens``.
        """
        return tokens

    def keep_decoded_mean(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``after`` (tokens of the same cells, e.g. with their spread changed about the same
        mean) shifted so that its decoded mean is ``before``'s (``clips_output``).

        The default (a tokenizer that does not clip per coordinate) returns ``after``.
        """
        return after


TOKENIZERS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a tokenizer class to :data:`TOKENIZERS` under ``name``.

    Registered classes are rebuilt by :func:`scdit.load` from ``meta["kind"]`` through their
    ``from_state(meta, arrays)`` classmethod. A class must provide every member of
    :class:`Tokenizer` (inherit :class:`BaseTokenizer` for the defaults of the optional
    abilities); a :class:`TypeError` names what is missing.
    """

    def deco(cls):
        missing = missing_members(cls)
        if not hasattr(cls, "from_state"):
            missing.append("from_state")
        if missing:
            raise TypeError(f"Tokenizer class {cls.__name__} lacks {missing} of the "
                            "scdit.tokenizers.Tokenizer protocol; inherit "
                            "scdit.tokenizers.BaseTokenizer for the optional abilities' defaults "
                            "and implement the rest.")
        TOKENIZERS[name] = cls
        return cls

    return deco


def missing_members(obj: Any) -> list[str]:
    """Members of the :class:`Tokenizer` protocol that ``obj`` (a class or an instance) lacks.

    Attributes set only in ``__init__`` or ``fit`` (``genes``, ``n_tokens``, ...) are not
    visible on a class, so for a class only the methods and the declared optional abilities are
    checked.
    """
    names = [n for n in Tokenizer.__annotations__ if n not in ("genes", "n_tokens",
                                                                "patch_size", "n_features")]
    names += [n for n in ("fit", "prepare", "encode", "decode", "units",
                          "match_decoded_mean", "state")]
    if not isinstance(obj, type):
        names += ["genes", "n_tokens", "patch_size", "n_features"]
    return [n for n in names if not hasattr(obj, n)]


def build_tokenizer(kind: str, **kwargs) -> Tokenizer:
    """Instantiate a registered tokenizer by name."""
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {kind!r}; available: {sorted(TOKENIZERS)}.")
    return TOKENIZERS[kind](**kwargs)


def tokenizer_from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Tokenizer:
    """Rebuild a fitted tokenizer saved with ``state()``, choosing the class by ``meta["kind"]``.

    Raises
    ------
    ValueError
        An unregistered kind, or a state the class cannot rebuild from (a missing key or array,
        a value of the wrong type: a damaged or incompatible model file).
    """
    kind = meta.get("kind", "genes")
    if kind not in TOKENIZERS:
        raise ValueError(f"The model uses tokenizer {kind!r}, which is not registered here "
                         f"(available: {sorted(TOKENIZERS)}); import the module that registers "
                         "it before loading.")
    try:
        return TOKENIZERS[kind].from_state(meta, arrays)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"The saved state of the {kind!r} tokenizer is incomplete or invalid "
                         f"({type(err).__name__}: {err}); the model files are damaged or were "
                         "written by an incompatible scdit: re-save or re-fit the model.") from err


def token_layout(n_features: int, max_tokens: int, patch_size: int | None = None) -> tuple[int, int]:
    """``(n_tokens, patch_size)`` covering ``n_features`` values with no empty token.

    ``patch_size`` given: ``n_tokens = ceil(n_features / patch_size)``; otherwise the smallest
    patch that keeps ``n_tokens ≤ max_tokens``.
    """
    n = max(int(n_features), 1)
    if patch_size is not None:
        if int(patch_size) < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}.")
        p = int(patch_size)
    else:
        if int(max_tokens) < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
        p = int(np.ceil(n / int(max_tokens)))
    return int(np.ceil(n / p)), p


class StandardTokens(BaseTokenizer):
    """Shared encode/decode of a dense model input: per-feature standardisation + patching.

    Subclasses set ``n_features``, ``n_tokens``, ``patch_size`` and call :meth:`_fit_scale` on
    their prepared training matrix.
    """

    n_features: int = 0
    n_tokens: int = 0
    patch_size: int = 1

    def _fit_scale(self, Z: np.ndarray, floor: float = 1e-3) -> None:
        Z = np.asarray(Z, dtype=np.float64)
        self.mean = torch.as_tensor(Z.mean(0), dtype=torch.float32)
        self.std = torch.as_tensor(Z.std(0) + floor, dtype=torch.float32)

    def units(self) -> np.ndarray | None:
        """Per-coordinate feature scale (the standardisation's std), 1 for padding; None before
        ``fit``."""
        return padded_units(getattr(self, "std", None), self.n_tokens, self.patch_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_features)`` → ``(B, n_tokens, patch_size)`` standardised, zero-padded."""
        z = (x - self.mean.to(x)) / self.std.to(x)  # (B, F)
        pad = self.n_tokens * self.patch_size - self.n_features
        if pad:
            z = torch.nn.functional.pad(z, (0, pad))  # (B, T*P)
        return z.reshape(x.shape[0], self.n_tokens, self.patch_size)  # (B, T, P)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`: ``(B, T, P)`` → ``(B, n_features)`` model input."""
        z = tokens.reshape(tokens.shape[0], -1)[:, : self.n_features]  # (B, F)
        return z * self.std.to(z) + self.mean.to(z)


def padded_units(std, n_tokens: int, patch_size: int) -> np.ndarray | None:
    """``std`` of the features padded with ones to ``n_tokens * patch_size`` (None if empty)."""
    if std is None or not len(std):
        return None
    out = np.ones(max(int(n_tokens) * int(patch_size), len(std)))
    out[: len(std)] = np.asarray(std, dtype=np.float64)
    return out


def check_fitted(tok, what: str = "this") -> None:
    """Clear error when a tokenizer is used before ``fit``."""
    if not getattr(tok, "n_tokens", 0):
        raise RuntimeError(f"The tokenizer must be fitted before {what}; call fit() first.")
