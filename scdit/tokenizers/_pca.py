"""PCA tokenizer: principal-component scores of log1p expression, decoded by inverse transform."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._base import StandardTokens, check_fitted, register, token_layout
from ._genes import select_genes


def _chunks(X, step: int = 4096):
    for start in range(0, X.shape[0], step):
        sub = X[start:start + step]
        yield np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)


def pca_components(X, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact PCA of the rows of ``X`` through its gene × gene covariance, read in chunks.

    Returns ``(mean (G,), components (k, G), explained_variance (k,))`` with
    ``k = min(n_components, G, n_cells - 1)``.
    """
    n, G = X.shape
    s1, s2 = np.zeros(G), np.zeros((G, G))
    for chunk in _chunks(X):
        s1 += chunk.sum(0)
        s2 += chunk.T @ chunk
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(vals)[::-1][: max(1, min(n_components, G, n - 1))]
    comps = vecs[:, order].T  # (k, G)
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])  # deterministic sign
    return mean, comps * signs[:, None], np.maximum(vals[order], 0.0)


@register("pca")
class PCATokenizer(StandardTokens):
    """Principal components of log1p expression of selected genes, several per token.

    Decoding is the inverse transform ``scores @ components + mean``, clipped at 0: variation
    outside the kept components is lost, which the reconstruction ceiling quantifies.

    Parameters
    ----------
    n_components
        Principal components kept (default 50; at most the number of genes and cells − 1).
    n_top_genes
        Highly variable genes the PCA is computed on (perturbation targets always kept).
    max_tokens
        Maximum tokens per cell; ``patch_size = ceil(n_components / max_tokens)`` components share
        a token.
    patch_size
        Components per token; overrides ``max_tokens``.
    """

    kind = "pca"
    requires_counts = False
    #: ``decode`` clips genes at 0, but a coordinate is a component, not a gene: no per-coordinate
    #: correction of the decoded mean exists (:meth:`match_decoded_mean` returns its input).
    clips_output = False

    def __init__(self, n_components: int = 50, n_top_genes: int = 2000, max_tokens: int = 16,
                 patch_size: int | None = None):
        if int(n_components) < 1:
            raise ValueError(f"n_components must be a positive integer, got {n_components!r}.")
        token_layout(1, max_tokens, patch_size)
        self.n_components = int(n_components)
        self.n_top_genes = int(n_top_genes)
        self.max_tokens = int(max_tokens)
        self.fixed_patch = None if patch_size is None else int(patch_size)
        self.genes: tuple[str, ...] = ()
        self.gene_idx = np.zeros(0, dtype=np.int64)
        self.n_features = self.n_tokens = 0
        self.patch_size = 1
        self.center = np.zeros(0, np.float32)
        self.components = np.zeros((0, 0), np.float32)
        self.explained_variance = np.zeros(0, np.float32)

    @property
    def n_genes(self) -> int:
        """Number of genes the components span."""
        return len(self.genes)

    def fit(self, X, var_names: Sequence[str], *, counts=None, obs=None,
            required_genes: Sequence[str] = (), seed: int = 0) -> PCATokenizer:
        """Select genes and compute the principal components of log1p ``X``."""
        self.gene_idx = np.asarray(select_genes(X, var_names, self.n_top_genes, required_genes),
                                   dtype=np.int64)
        self.genes = tuple(str(var_names[i]) for i in self.gene_idx)
        mean, comps, ev = pca_components(X[:, self.gene_idx], self.n_components)
        self.center = mean.astype(np.float32)
        self.components = comps.astype(np.float32)
        self.explained_variance = ev.astype(np.float32)
        self.n_features = len(comps)
        self.n_tokens, self.patch_size = token_layout(self.n_features, self.max_tokens,
                                                      self.fixed_patch)
        self._fit_scale(self.prepare(X))
        return self

    def prepare(self, X, counts=None, obs=None) -> np.ndarray:
        """PCA scores ``(n_cells, n_components)`` of log1p ``X`` (cells × training genes)."""
        check_fitted(self, "prepare")
        sub = X[:, self.gene_idx]
        out = np.empty((sub.shape[0], self.n_features), np.float32)
        shift = self.center.astype(np.float64) @ self.components.T.astype(np.float64)  # (k,)
        for start in range(0, sub.shape[0], 4096):
            chunk = sub[start:start + 4096]
            proj = chunk @ self.components.T.astype(np.float64)  # (n, k), sparse-friendly
            out[start:start + 4096] = np.asarray(proj) - shift
        return out

    def decode(self, tokens: torch.Tensor, obs=None) -> torch.Tensor:
        """``(B, T, P)`` → log1p ``(B, n_genes)``: inverse PCA transform clipped at 0."""
        scores = self.features(tokens)  # (B, k)
        comps = torch.as_tensor(self.components).to(scores)  # (k, G)
        return (scores @ comps + torch.as_tensor(self.center).to(scores)).clamp_min(0.0)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings, arrays) to save."""
        meta = {"kind": self.kind, "n_components": self.n_components,
                "n_top_genes": self.n_top_genes, "max_tokens": self.max_tokens,
                "fixed_patch": self.fixed_patch, "genes": list(self.genes),
                "n_features": self.n_features, "n_tokens": self.n_tokens,
                "patch_size": self.patch_size}
        return meta, {"mean": self.mean.numpy(), "std": self.std.numpy(), "gene_idx": self.gene_idx,
                      "center": self.center, "components": self.components,
                      "explained_variance": self.explained_variance}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> PCATokenizer:
        """Rebuild a fitted tokenizer from :meth:`state`."""
        tok = cls(meta["n_components"], meta["n_top_genes"], meta["max_tokens"], meta["fixed_patch"])
        tok.genes = tuple(meta["genes"])
        tok.n_features, tok.n_tokens = int(meta["n_features"]), int(meta["n_tokens"])
        tok.patch_size = int(meta["patch_size"])
        for name in ("center", "components", "explained_variance"):
            setattr(tok, name, np.asarray(arrays[name], np.float32))
        tok.gene_idx = np.asarray(arrays["gene_idx"], np.int64)
        tok.mean = torch.as_tensor(np.asarray(arrays["mean"]), dtype=torch.float32)
        tok.std = torch.as_tensor(np.asarray(arrays["std"]), dtype=torch.float32)
        return tok
