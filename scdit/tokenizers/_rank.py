"""Rank-value encoding of expression (in the style of Geneformer, Theodoris et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


def _dense_chunks(X, step: int = 4096):
    for start in range(0, X.shape[0], step):
        sub = X[start:start + step]
        yield np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)


@dataclass
class RankCodec:
    """Within-cell ranks of median-normalised expression, and a decoder back to log1p.

    Encoding: each gene's normalised expression ``u = expm1(x) / m_g`` (``m_g``: the gene's
    median over the cells that express it, so ubiquitous highly expressed genes do not always
    rank first) is ranked within the cell. A gene at position ``k`` (0 = highest) of a cell's
    expressed genes scores ``1 - k / G``; unexpressed genes score 0. The number of expressed
    genes and their order survive; magnitudes do not.

    Decoding: a gene at position ``k`` gets ``log1p(m_g · exp(L[k]))``, where ``L[k]`` is the
    average ``log u`` at position ``k`` over the training cells; scores below ``0.5 / G`` decode
    to 0.

    Attributes
    ----------
    norm
        ``m_g``, shape ``(G,)``.
    level
        ``L``, shape ``(G,)``.
    """

    norm: np.ndarray
    level: np.ndarray

    @classmethod
    def fit(cls, X) -> RankCodec:
        """Fit on log1p ``X`` (cells × genes, dense or sparse)."""
        G = X.shape[1]
        cols = [[] for _ in range(G)]
        for chunk in _dense_chunks(X):
            e = np.expm1(chunk)
            for g in range(G):
                v = e[:, g]
                cols[g].append(v[v > 0])
        norm = np.array([np.median(np.concatenate(c)) if sum(len(a) for a in c) else 1.0
                         for c in cols])
        total, count = np.zeros(G), np.zeros(G)
        for chunk in _dense_chunks(X):
            u = np.expm1(chunk) / norm
            logu = np.where(chunk > 0, np.log(np.maximum(u, 1e-12)), -np.inf)
            srt = -np.sort(-logu, axis=1)  # (n, G) descending, -inf last
            ok = np.isfinite(srt)
            total += np.where(ok, srt, 0.0).sum(0)
            count += ok.sum(0)
        level = np.divide(total, count, out=np.zeros(G), where=count > 0)
        seen = np.flatnonzero(count > 0)
        if len(seen):  # positions never reached: the lowest observed level
            level[seen[-1] + 1:] = level[seen[-1]]
        return cls(norm=norm.astype(np.float32), level=level.astype(np.float32))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """log1p ``(B, G)`` → rank values ``(B, G)`` in ``[0, 1]``."""
        G = x.shape[1]
        expressed = x > 0
        u = torch.expm1(x.clamp_min(0.0)) / torch.as_tensor(self.norm).to(x)
        key = torch.where(expressed, u, torch.full_like(u, -1.0))
        order = torch.argsort(key, dim=1, descending=True, stable=True)  # (B, G)
        pos = torch.empty_like(order)
        pos.scatter_(1, order, torch.arange(G, device=x.device).expand_as(order))
        return torch.where(expressed, 1.0 - pos.to(x.dtype) / G, torch.zeros_like(x))

    def values(self, r: torch.Tensor) -> torch.Tensor:
        """Rank values ``(B, G)`` → log1p ``(B, G)``."""
        G = r.shape[1]
        k = ((1.0 - r) * G).round().clamp(0, G - 1).long()  # (B, G)
        level = torch.as_tensor(self.level).to(r)[k]  # (B, G)
        out = torch.log1p(torch.as_tensor(self.norm).to(r) * torch.exp(level))
        return torch.where(r > 0.5 / G, out, torch.zeros_like(out))

    def score_moments(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Per-gene mean and standard deviation of :meth:`scores` over the rows of ``X``."""
        s1 = np.zeros(X.shape[1])
        s2 = np.zeros(X.shape[1])
        for chunk in _dense_chunks(X):
            r = self.scores(torch.as_tensor(chunk)).numpy()
            s1 += r.sum(0)
            s2 += (r * r).sum(0)
        n = max(X.shape[0], 1)
        mean = s1 / n
        return mean, np.sqrt(np.maximum(s2 / n - mean**2, 0.0))

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays to save."""
        return {"rank_norm": self.norm, "rank_level": self.level}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RankCodec:
        """Rebuild from :meth:`arrays`."""
        return cls(norm=np.asarray(arrays["rank_norm"], np.float32),
                   level=np.asarray(arrays["rank_level"], np.float32))
