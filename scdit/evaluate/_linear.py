"""The linear baseline of Ahlmann-Eltze, Huber & Anders (Nat. Methods 2025).

A ridge regression ``Y ≈ G K Pᵀ + b`` on training pseudobulks: ``Y`` (genes × training groups)
holds the perturbation effects ``δ_q = x̄_q − x̄_ctrl`` in log1p space, ``b`` their row mean,
``G`` (genes × k) the top-k principal components of the row-centred ``Y`` (gene scores ``U S``),
and ``P`` (groups × k) the perturbation embedding: by default the row of ``G`` of each
perturbation's target gene (so unseen perturbations of measured genes can be predicted), or a
user embedding. A combination's embedding is the sum of its members' (``P_{A+B} = P_A + P_B``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..data import split_label

#: Default number of principal components and ridge penalty (as in the paper).
N_PCS = 10
RIDGE = 0.1


class LinearBaseline:
    """Fit ``Y ≈ G K Pᵀ + b`` on training effects and predict effects of new conditions.

    Parameters
    ----------
    effects
        ``(condition, context)`` → effect vector ``δ`` (log1p mean minus control mean) of the
        training groups. Groups of all contexts are pooled (one column each).
    var_names
        Gene names of the effect vectors (to find target genes in ``G``).
    control, separator
        Control label and combination separator (to split labels into members).
    embedding
        Optional perturbation embedding: DataFrame indexed by single-perturbation name, one
        column per dimension. Default: the target gene's row of ``G``.
    n_pcs
        Number of principal components of ``G`` (clipped to the rank of ``Y``).
    ridge
        Ridge penalty λ on both sides of ``K``.

    Attributes
    ----------
    G, K, b
        The fitted gene embedding, coefficient matrix and offset.
    n_fit
        Number of training groups with a known embedding (used to fit ``K``).
    """

    def __init__(
        self,
        effects: Mapping[tuple, np.ndarray],
        var_names,
        *,
        control: str,
        separator: str = "+",
        embedding: pd.DataFrame | None = None,
        n_pcs: int = N_PCS,
        ridge: float = RIDGE,
    ) -> None:
        self.control = control
        self.separator = separator
        self.var_index = pd.Index([str(v) for v in var_names])
        self.embedding = embedding
        keys = list(effects)
        n_genes = len(self.var_index)
        if not keys:
            self.G = np.zeros((n_genes, 0))
            self.K = np.zeros((0, 0))
            self.b = np.zeros(n_genes)
            self.n_fit = 0
            return
        Y = np.stack([np.asarray(effects[k], dtype=np.float64) for k in keys], axis=1)
        self.b = Y.mean(1)
        Yc = Y - self.b[:, None]
        U, S, _ = np.linalg.svd(Yc, full_matrices=False)
        rank = int((S > max(S[0], 1e-300) * 1e-10).sum()) if S.size else 0
        k = min(int(n_pcs), rank)
        self.G = U[:, :k] * S[:k]
        rows = [self.embed(key[0]) for key in keys]
        ok = [i for i, r in enumerate(rows) if r is not None]
        self.n_fit = len(ok)
        if not ok:
            self.K = np.zeros((k, self._dim()))
            return
        P = np.stack([rows[i] for i in ok])
        Yk = Yc[:, ok]
        lam = float(ridge)
        left = np.linalg.pinv(self.G.T @ self.G + lam * np.eye(k))
        right = np.linalg.pinv(P.T @ P + lam * np.eye(P.shape[1]))
        self.K = left @ self.G.T @ Yk @ P @ right

    def _dim(self) -> int:
        return self.G.shape[1] if self.embedding is None else self.embedding.shape[1]

    def _member(self, name: str) -> np.ndarray | None:
        if self.embedding is not None:
            if name not in self.embedding.index:
                return None
            return np.asarray(self.embedding.loc[name], dtype=np.float64).ravel()
        pos = self.var_index.get_indexer([name])[0]
        return None if pos < 0 else self.G[pos]

    def embed(self, condition: str) -> np.ndarray | None:
        """Embedding of a condition (sum over its members), or None if a member is unknown."""
        members = split_label(condition, self.control, self.separator)
        if not members:
            return None
        vecs = [self._member(m) for m in members]
        if any(v is None for v in vecs):
            return None
        return np.sum(vecs, axis=0)

    def predict(self, condition: str) -> np.ndarray | None:
        """Predicted effect ``G K P_pᵀ + b`` of ``condition`` (None where not applicable)."""
        if self.n_fit == 0:
            return None
        p = self.embed(condition)
        if p is None:
            return None
        return self.G @ (self.K @ p) + self.b
