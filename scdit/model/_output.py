"""Generated tokens → output cells in the training genes and representation, chunk by chunk.

``predict`` decodes, converts to counts, anchors the unmodelled genes and applies the target
prior a chunk of cells at a time (float32), appending each chunk to an :class:`OutputBuilder`
that assembles the final CSR matrix; its memory beyond the output is bounded by the chunk size.
Every random draw comes from a per-label stream (:class:`~scdit.model._seeds.LabelSeeds`) used
in row order, so the chunk size does not change which values are drawn.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data import log1p_to_counts, to_log1p
from ._cells import LIBRARY_KEY, CellStore
from ._seeds import COUNTS, PRIOR, LabelSeeds

#: Most values (cells × genes) decoded at a time (float32; the counts conversion works on
#: float64 copies of a chunk).
CHUNK_VALUES = 2**21


def chunk_rows(batch_size: int, n_vars: int) -> int:
    """Cells per output chunk: ``batch_size``, at most :data:`CHUNK_VALUES` values."""
    return max(1, min(int(batch_size), CHUNK_VALUES // max(int(n_vars), 1)))


class OutputBuilder:
    """The rows of ``predict``'s output, appended chunk by chunk, assembled once as CSR float32.

    Each chunk is kept as its CSR arrays; :meth:`build` copies them into the final arrays one at
    a time and frees each, so that assembling costs about one chunk beyond the output.

    Parameters
    ----------
    var_names
        The output's genes.
    """

    def __init__(self, var_names: pd.Index):
        self.var_names = var_names
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._obs: list[pd.DataFrame] = []

    def add(self, X: np.ndarray) -> None:
        """Append the dense rows ``X`` ``(b, n_vars)`` (stored sparse)."""
        m = sp.csr_matrix(np.asarray(X, dtype=np.float32))
        self._chunks.append((m.data, m.indices, np.diff(m.indptr)))

    def add_obs(self, obs: pd.DataFrame) -> None:
        """Append the ``obs`` rows of the cells added since the last call."""
        self._obs.append(obs)

    def build(self) -> ad.AnnData:
        """The output AnnData (CSR float32 ``X``); the builder is emptied."""
        nnz = sum(len(d) for d, _, _ in self._chunks)
        n = sum(len(r) for _, _, r in self._chunks)
        idx = np.int32 if max(nnz, len(self.var_names)) < 2**31 else np.int64
        data, indices = np.empty(nnz, np.float32), np.empty(nnz, idx)
        indptr = np.zeros(n + 1, idx)
        pos = row = 0
        self._chunks.reverse()
        while self._chunks:  # pop in order, freeing each chunk once copied
            d, i, r = self._chunks.pop()
            data[pos:pos + len(d)], indices[pos:pos + len(d)] = d, i
            indptr[row + 1:row + 1 + len(r)] = r
            pos, row = pos + len(d), row + len(r)
        np.cumsum(indptr, out=indptr)
        X = sp.csr_matrix((data, indices, indptr), shape=(n, len(self.var_names)))
        obs = pd.concat(self._obs) if len(self._obs) > 1 else self._obs[0]
        self._obs = []
        return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=self.var_names))


def decode_chunk(cells: CellStore, tokenizer, tokens: torch.Tensor, X, obs: pd.DataFrame, rng,
                 representation: str) -> np.ndarray:
    """Decode generated ``tokens`` ``(b, T, P)`` into copies of ``b`` reference cells (their
    expression ``X`` and ``obs`` rows), dense float32 ``(b, n_vars)``.

    Counts come from the tokenizer's ``decode_counts`` (scVI: sampled from its likelihood with
    the reference cell's library size of the modelled genes) when it has one, else from the
    decoded log1p with the reference cell's library size. ``representation="log1p"`` for a
    counts model returns the decoded log1p instead (unmodelled genes: the reference cells'
    own, normalised).
    """
    X = X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float32)
    X = X.astype(np.float32, copy=False)
    idx = cells.modelled
    trained = cells.config.data.representation
    z = torch.as_tensor(tokens, dtype=torch.float32)  # (b, T, P)
    if trained == "counts" and representation == "log1p":
        X = np.asarray(to_log1p(X, "counts"), dtype=np.float32)
        X[:, idx] = tokenizer.decode(z, obs=obs).numpy()
    elif trained == "counts" and tokenizer.can_decode_counts:
        lib = X[:, idx].sum(1)  # (b,) reference library of the modelled genes
        X[:, idx] = tokenizer.decode_counts(z, lib, obs=obs, generator=rng).numpy()
    elif trained == "counts":
        lib = obs[LIBRARY_KEY].to_numpy()
        X[:, idx] = log1p_to_counts(tokenizer.decode(z, obs=obs).numpy(), lib, rng=rng)
    else:
        X[:, idx] = tokenizer.decode(z, obs=obs).numpy()
    return X


def output_obs(cells: CellStore, label: str, ref: ad.AnnData) -> pd.DataFrame:
    """``obs`` of the generated cells of ``label``: label, covariates, reference cell."""
    key = cells.config.data.condition_key
    obs = pd.DataFrame({key: label}, index=[f"{label}-{i}" for i in range(ref.n_obs)])
    for k in cells.covariates.keys:
        obs[k] = ref.obs[k].astype(str).to_numpy()
    obs["reference_cell"] = ref.obs["reference_cell"].to_numpy()
    return obs


def write_cells(out: OutputBuilder, cells: CellStore, tokenizer, label: str,
                tokens: torch.Tensor, ref: ad.AnnData, seeds: LabelSeeds, representation: str,
                rows: int, anchor=None, prior: tuple[float, list[int]] | None = None) -> None:
    """Decode ``label``'s generated ``tokens`` ``(n, T, P)`` (one per cell of ``ref``) ``rows``
    cells at a time, anchor their unmodelled genes (``anchor.apply``, see
    :meth:`EffectTargets.unmodelled_anchor`), apply the target ``prior`` (see
    :func:`target_prior_genes`) and append them to ``out``."""
    counts_rng = seeds.rng(COUNTS)
    ratio, genes = prior if prior is not None else (1.0, [])
    prior_rngs = [(j, seeds.rng(PRIOR, j)) for j in genes]
    for s in range(0, ref.n_obs, rows):
        e = min(ref.n_obs, s + rows)
        X = decode_chunk(cells, tokenizer, tokens[s:e], ref.X[s:e], ref.obs.iloc[s:e],
                         counts_rng, representation)
        if anchor is not None:
            anchor.apply(X, s, e)
        for j, rng in prior_rngs:
            X[:, j] = _prior_column(X[:, j], ratio, rng, representation)
        out.add(X)
    out.add_obs(output_obs(cells, label, ref))


def target_prior_genes(cells: CellStore, summary: dict, label: str
                       ) -> tuple[float, list[int]] | None:
    """``(ratio, gene columns)`` of the target prior for ``label``: its unseen (feature-only)
    members that are measured genes are scaled by the training prior (``summary
    ["target_prior"]``: the typical ratio of a targeted gene's mean to control); ``None`` where
    the prior does not apply."""
    prior = summary.get("target_prior") or {}
    if not prior or prior.get("n", 0) < 2:
        return None
    if np.sign(prior.get("q25", 0.0)) != np.sign(prior.get("q75", 0.0)):
        return None  # targets go both ways in training (mixed CRISPRa/i): no single prior
    vocab = cells.vocab
    targets = [m for m in vocab.members(label)
               if m in set(vocab.featured) and m in cells.var_names]
    if not targets:
        return None
    return float(np.exp(prior["log_ratio"])), [int(cells.var_names.get_loc(g)) for g in targets]


def _prior_column(col: np.ndarray, ratio: float, rng: np.random.Generator,
                  representation: str) -> np.ndarray:
    """One target gene's values scaled by ``ratio`` (counts: binomial thinning or Poisson
    excess, drawn from the gene's own stream ``rng``)."""
    if representation == "counts":
        if ratio <= 1:
            return rng.binomial(np.round(col).astype(np.int64), ratio)
        return np.round(col) + rng.poisson(np.round(col) * (ratio - 1))
    return np.log1p(np.expm1(col) * ratio)
