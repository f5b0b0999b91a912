"""Gene-token tokenizer: highly variable genes grouped into co-expression patches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data import clipped_mean_shift, dispersion_top, mean_fold_or_shift
from ._base import BaseTokenizer, check_fitted, padded_units, register, token_layout
from ._rank import RankCodec


def select_genes(X, var_names: Sequence[str], n_top: int, required: Sequence[str] = ()) -> list[int]:
    """Indices of the ``n_top`` most variable genes of log1p ``X``, plus ``required`` genes.

    Variability is the dispersion (variance / mean) ranked within up to 20 bins of mean
    expression, at least 10 genes per bin (the Seurat recipe). As in Seurat, mean and variance are
    those of ``expm1(X)`` (normalised expression, not its log: the log lowers the mean of
    over-dispersed genes and moves them into the wrong bins), computed without densifying a
    sparse ``X``.
    """
    n_genes = len(var_names)
    names = list(var_names)
    req = [names.index(g) for g in dict.fromkeys(required) if g in set(names)]
    if n_genes <= n_top:
        return list(range(n_genes))
    mean, var = _expm1_mean_var(X)
    return [int(i) for i in dispersion_top(mean, var, n_top, req)]


def _expm1_mean_var(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance of ``expm1(X)`` (float64); sparse stays sparse, dense in chunks."""
    n = max(X.shape[0], 1)
    if sp.issparse(X):
        e = sp.csr_matrix(X, dtype=np.float64, copy=True)
        np.expm1(e.data, out=e.data)
        s1 = np.asarray(e.sum(axis=0)).ravel()
        s2 = np.asarray(e.multiply(e).sum(axis=0)).ravel()
    else:
        X = np.asarray(X)
        s1, s2 = np.zeros(X.shape[1]), np.zeros(X.shape[1])
        step = max(1, 2**22 // max(X.shape[1], 1))
        for start in range(0, X.shape[0], step):
            e = np.expm1(X[start:start + step].astype(np.float64))  # (chunk, G)
            s1 += e.sum(0)
            s2 += (e * e).sum(0)
    mean = s1 / n
    return mean, np.maximum(s2 / n - mean**2, 0.0)


def coexpression_order(X, *, max_cells: int = 5000, seed: int = 0) -> np.ndarray:
    """Order genes by average-linkage clustering of ``1 - correlation`` (similar genes adjacent)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    n = X.shape[0]
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, size=min(n, max_cells), replace=False)
    sub = X[np.sort(rows)]
    dense = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
    if dense.shape[1] < 3:
        return np.arange(dense.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):  # constant genes → NaN, zeroed below
        corr = np.corrcoef(dense, rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


ENCODINGS = ("value", "rank")
#: Decoded log1p values below this are zeros (float32 tokens bring a 0 back within ~1e-6;
#: the smallest non-zero log1p-normalised value of a cell with a million counts is ~0.01).
ZERO_TOL = 1e-5


@register("genes")
class GeneTokenizer(BaseTokenizer):
    """Log1p expression of selected genes, grouped into patches of genes.

    Parameters
    ----------
    n_top_genes
        Highly variable genes to keep (all genes when there are fewer).
    max_tokens
        Maximum tokens per cell; ``patch_size = ceil(n_genes / max_tokens)`` genes share a token.
    gene_order
        ``"coexpression"`` (co-expressed genes share patches) or ``"given"`` (the order of
        ``var_names``).
    patch_size
        Genes per token; overrides ``max_tokens`` when given.
    encoding
        ``"value"``: each gene's standardised log1p value. ``"rank"``: a Geneformer-style
        rank-value encoding (genes ranked within each cell after dividing by their non-zero median
        across cells; see :class:`scdit.tokenizers._rank.RankCodec`); it discards magnitudes,
        and its reconstruction ceiling shows what that costs.
    gene_features
        Optional ``DataFrame`` of numeric gene features (rows indexed by gene name, e.g. gene
        embeddings from a foundation model) that initialises the DiT's learned gene-identity
        embeddings (projected onto the hidden size by PCA); genes absent from it start at zero.
        Used at ``fit`` time only: the learned embeddings are saved with the network.
    """

    kind = "genes"
    requires_counts = False
    can_decode_counts = False

    def __init__(self, n_top_genes: int = 2000, max_tokens: int = 64, gene_order: str = "coexpression",
                 patch_size: int | None = None, encoding: str = "value",
                 gene_features: pd.DataFrame | None = None):
        if gene_order not in ("coexpression", "given"):
            raise ValueError(f"gene_order must be 'coexpression' or 'given', got {gene_order!r}.")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {list(ENCODINGS)}, got {encoding!r}.")
        if gene_features is not None:
            _check_gene_features(gene_features)
        token_layout(1, max_tokens, patch_size)  # validates both
        self.n_top_genes = int(n_top_genes)
        self.max_tokens = int(max_tokens)
        self.gene_order = gene_order
        self.fixed_patch = None if patch_size is None else int(patch_size)
        self.encoding = encoding
        self.gene_features = gene_features
        self.gene_embedding_init: np.ndarray | None = None
        self.genes: tuple[str, ...] = ()
        self.gene_idx = np.zeros(0, dtype=np.int64)
        self.patch_size = 1
        self.n_tokens = 0
        self.mean = torch.zeros(0)
        self.std = torch.ones(0)
        self.rank: RankCodec | None = None

    def fit(self, X, var_names: Sequence[str], *, counts=None, obs=None,
            required_genes: Sequence[str] = (), seed: int = 0) -> GeneTokenizer:
        """Select and order genes, set patching and per-gene standardisation from log1p ``X``."""
        idx = np.asarray(select_genes(X, var_names, self.n_top_genes, required_genes))
        sub = X[:, idx]
        if self.gene_order == "coexpression":
            idx = idx[coexpression_order(sub, seed=seed)]
            sub = X[:, idx]
        self.gene_idx = idx.astype(np.int64)
        self.genes = tuple(str(var_names[i]) for i in idx)
        self.n_tokens, self.patch_size = token_layout(len(idx), self.max_tokens, self.fixed_patch)
        if self.encoding == "rank":
            self.rank = RankCodec.fit(sub)
            mean, std = self.rank.score_moments(sub)
            self.mean = torch.as_tensor(mean, dtype=torch.float32)
            self.std = torch.as_tensor(std + 0.01, dtype=torch.float32)
        else:
            mean = np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()
            sq = sub.multiply(sub) if sp.issparse(sub) else np.asarray(sub) ** 2
            var = np.asarray(sq.mean(axis=0), dtype=np.float64).ravel() - mean**2
            self.mean = torch.as_tensor(mean, dtype=torch.float32)
            self.std = torch.as_tensor(np.sqrt(np.maximum(var, 0.0)) + 0.05, dtype=torch.float32)
        if self.gene_features is not None:
            self.gene_embedding_init = align_gene_features(self.gene_features, self.genes)
        return self

    @property
    def n_genes(self) -> int:
        """Number of modelled genes."""
        return len(self.genes)

    @property
    def expression_coordinates(self) -> bool:
        """True with ``encoding="value"``: each coordinate is one gene's standardised log1p."""
        return self.encoding == "value"

    @property
    def clips_output(self) -> bool:
        """True with ``encoding="value"``: :meth:`decode` clips each gene's log1p at 0."""
        return self.encoding == "value"

    def units(self) -> np.ndarray | None:
        """Per-coordinate scale: each gene's std (log1p, or rank score with ``"rank"``), 1 for
        padding; None before ``fit``."""
        return padded_units(self.std, self.n_tokens, self.patch_size)

    @property
    def n_features(self) -> int:
        """Width of the model input (one column per modelled gene)."""
        return len(self.genes)

    def prepare(self, X, counts=None, obs=None):
        """Model input: log1p ``X`` (cells × training genes) restricted to :attr:`genes`.

        Sparse input stays sparse (CSR float32); dense input gives a float32 array.
        """
        check_fitted(self, "prepare")
        sub = X[:, self.gene_idx]
        return sp.csr_matrix(sub, dtype=np.float32) if sp.issparse(sub) else np.asarray(sub, np.float32)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_genes)`` log1p → ``(B, n_tokens, patch_size)`` standardised, zero-padded."""
        if self.rank is not None:
            x = self.rank.scores(x)  # (B, G) rank values in [0, 1]
        z = (x - self.mean.to(x)) / self.std.to(x)  # (B, G)
        pad = self.n_tokens * self.patch_size - self.n_genes
        if pad:
            z = torch.nn.functional.pad(z, (0, pad))  # (B, T*P)
        return z.reshape(x.shape[0], self.n_tokens, self.patch_size)  # (B, T, P)

    def decode(self, tokens: torch.Tensor, obs=None) -> torch.Tensor:
        """``(B, n_tokens, patch_size)`` → ``(B, n_genes)`` log1p, clipped at 0."""
        z = tokens.reshape(tokens.shape[0], -1)[:, : self.n_genes]  # (B, G)
        z = z * self.std.to(z) + self.mean.to(z)
        if self.rank is not None:
            return self.rank.values(z)
        return z.clamp_min(0.0)

    def match_decoded_mean(self, tokens: torch.Tensor) -> torch.Tensor:
        """Shift each gene's tokens by one constant so that the mean of :meth:`decode` (clipped
        at 0) equals the mean of the unclipped decode (or 0 where that is negative).

        Anchoring sets the mean of the tokens; clipping negative log1p values at 0 then raises
        the decoded mean of lowly expressed genes by an amount that grows with the generated
        spread. This restores the anchored mean in the output. Rank-encoded tokenizers are
        returned unchanged (their decode is not a clipped affine map).
        """
        if self.rank is not None or len(tokens) == 0:
            return tokens
        return self._decoded_mean_to(tokens, self._unclipped(tokens).mean(0))

    def keep_decoded_mean(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``after`` with each gene's tokens shifted by one constant so that the mean of its
        :meth:`decode` (clipped at 0) equals that of ``before`` (the same cells' tokens before
        their spread changed: a wider spread clips more values and would raise the mean).
        Rank-encoded tokenizers return ``after`` unchanged."""
        if self.rank is not None or len(after) == 0:
            return after
        return self._decoded_mean_to(after, self._unclipped(before).clamp_min(0.0).mean(0))

    def scale_decoded_mean_to(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, T, P)`` whose decoded cells are scaled per gene, ``log1p(r ·
        expm1(x))`` with one factor ``r`` per gene (:func:`scdit.data.mean_fold_or_shift`), so
        that each gene's decoded mean is that of the token vector ``target`` ``(T, P)``.

        How a change of mean is imposed on real cells (a stand-in's control cells): zeros stay
        zeros, where a shift would raise them. A gene that no factor up to
        :data:`scdit.data.FOLD_MAX` brings to its mean (e.g. no expressing cell) is shifted
        instead (:func:`scdit.data.clipped_mean_shift`). Rank-encoded tokenizers return
        ``tokens`` unchanged (they do not clip an affine decode)."""
        if self.rank is not None or len(tokens) == 0:
            return tokens
        v = self._unclipped(tokens).cpu().numpy()  # (B, G) decoded log1p
        v[v < ZERO_TOL] = 0.0  # zeros come back from float32 tokens within ~1e-6
        std, mean = self.std.double(), self.mean.double()
        goal = (target.reshape(-1)[: self.n_genes].double().cpu() * std + mean).numpy()
        factor, shift = mean_fold_or_shift(v, goal)
        out = np.maximum(np.log1p(factor * np.expm1(v)) + shift, 0.0)
        flat = tokens.reshape(tokens.shape[0], -1).clone()
        z = (torch.as_tensor(out) - mean) / std
        z = torch.where(torch.as_tensor(out) == 0, z - 1e-3, z)  # zeros below the clip, exactly
        flat[:, : self.n_genes] = z.to(flat.dtype).to(flat.device)
        return flat.reshape(tokens.shape)

    def _unclipped(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` float64 log1p of ``tokens`` before the clip at 0."""
        flat = tokens.reshape(tokens.shape[0], -1)[:, : self.n_genes].double()
        return flat * self.std.to(flat) + self.mean.to(flat)

    def _decoded_mean_to(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``tokens`` shifted per gene so that their clipped decoded mean is ``target`` (G,)."""
        shift = torch.as_tensor(clipped_mean_shift(self._unclipped(tokens).cpu().numpy(),
                                                   target.cpu().numpy()))
        flat = tokens.reshape(tokens.shape[0], -1)
        std = self.std.to(flat).double()
        out = flat.clone()
        out[:, : self.n_genes] = (flat[:, : self.n_genes].double() + shift.to(std) / std
                                  ).to(flat.dtype)
        return out.reshape(tokens.shape)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings, arrays) to save."""
        meta = {"kind": self.kind, "n_top_genes": self.n_top_genes, "max_tokens": self.max_tokens,
                "gene_order": self.gene_order, "genes": list(self.genes),
                "patch_size": self.patch_size, "n_tokens": self.n_tokens,
                "fixed_patch": self.fixed_patch, "encoding": self.encoding,
                "gene_features": self.gene_embedding_init is not None}
        arrays = {"mean": self.mean.numpy(), "std": self.std.numpy(), "gene_idx": self.gene_idx}
        if self.rank is not None:
            arrays.update(self.rank.arrays())
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> GeneTokenizer:
        """Rebuild a fitted tokenizer from :meth:`state`."""
        tok = cls(meta["n_top_genes"], meta["max_tokens"], meta["gene_order"],
                  meta.get("fixed_patch"), meta.get("encoding", "value"))
        tok.genes = tuple(meta["genes"])
        tok.patch_size, tok.n_tokens = int(meta["patch_size"]), int(meta["n_tokens"])
        tok.mean = torch.as_tensor(np.asarray(arrays["mean"]), dtype=torch.float32)
        tok.std = torch.as_tensor(np.asarray(arrays["std"]), dtype=torch.float32)
        if "gene_idx" in arrays:  # models saved before scdit stored it get it from ScDiT.load
            tok.gene_idx = np.asarray(arrays["gene_idx"], dtype=np.int64)
        if tok.encoding == "rank":
            tok.rank = RankCodec.from_arrays(arrays)
        return tok


def _check_gene_features(df) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"gene_features must be a pandas DataFrame (genes × features), got "
                        f"{type(df).__name__}.")
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValueError("gene_features is empty; pass a DataFrame with gene rows and feature columns.")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"gene_features columns must be numeric; non-numeric: {bad[:5]}.")
    if not np.isfinite(df.to_numpy(dtype=np.float64)).all():
        raise ValueError("gene_features holds NaN or infinite values.")


def align_gene_features(df: pd.DataFrame, genes: Sequence[str]) -> np.ndarray:
    """Rows of ``df`` for ``genes`` (zeros for absent genes), columns standardised, ``(G, d)``."""
    index = pd.Index(df.index.astype(str))
    pos = index.get_indexer(list(genes))
    if (pos < 0).all():
        raise ValueError(f"None of the {len(genes)} modelled genes are in gene_features' index "
                         f"(e.g. {list(genes[:3])} vs {list(index[:3])}); index it by gene name.")
    F = df.to_numpy(dtype=np.float64)
    F = (F - F.mean(0)) / (F.std(0) + 1e-8)
    out = np.zeros((len(genes), F.shape[1]))
    out[pos >= 0] = F[pos[pos >= 0]]
    return out.astype(np.float32)
