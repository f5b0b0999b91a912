"""The genes outside the model in predicted cells: carried over from each cell's reference cell,
with one shift per gene and context that gives them a target mean (an effect estimate's, or the
change the generated genes imply, :class:`~scdit.model.GeneDecoder`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data import clipped_mean_shift, log1p_to_counts, mean_fold_or_shift
from ._cells import LIBRARY_KEY, CellRows, CellStore
from ._decoder import GeneDecoder

#: Most values (cells × genes, float64) the unmodelled genes' shifts are solved on at a time.
ANCHOR_VALUES = 2**21


def anchor(cells: CellStore, ref: CellRows, contexts: list, representation: str,
           rng: np.random.Generator,
           target_of: Callable[[tuple, np.ndarray], np.ndarray | None], *, scale: bool = False
           ) -> UnmodelledAnchor | None:
    """How to give the unmodelled genes of ``ref``'s cells (carried over from them) in each of
    ``contexts`` the mean ``target_of(ctx, carried)`` (``carried``: the cells' own mean; a
    ``None`` target leaves the context as it is): one shift per gene and context, solved over
    all the context's cells so that the mean after clipping at 0 is the target (counts: on
    each cell's log1p scale, then rounded as the modelled genes, with ``rng``). ``None`` where
    nothing is anchored. ``scale``: each gene's expression is scaled by one factor per
    context instead (:func:`scdit.data.mean_fold_or_shift`: shifted where no factor reaches
    the target). The shifts are solved a block of genes at a time (at most
    :data:`ANCHOR_VALUES` values); :meth:`UnmodelledAnchor.apply` applies them per chunk of
    cells."""
    cols = cells.unmodelled
    if not len(cols):
        return None
    X = sp.csr_matrix(cells.log1p_columns(ref), dtype=np.float32)  # (n, U) log1p
    ctx_of = cells.context_keys(cells.frame(ref), X.shape[0])
    codes, shifts, factors = np.full(X.shape[0], -1), [], []
    for ctx in contexts:
        rows = np.array([i for i, k in enumerate(ctx_of) if k == ctx], dtype=np.int64)
        if not len(rows):
            continue
        block = X[rows].tocsc()
        width = max(1, ANCHOR_VALUES // len(rows))
        spans = [slice(a, a + width) for a in range(0, len(cols), width)]
        carried = np.concatenate([_dense(block, sl).mean(0) for sl in spans])
        target = target_of(ctx, carried)
        if target is None:
            continue
        solved = [_solve(_dense(block, sl), target[sl], scale) for sl in spans]
        shifts.append(np.concatenate([sh for sh, _ in solved]))
        factors.append(np.concatenate([f for _, f in solved]))
        codes[rows] = len(shifts) - 1
    if not shifts:
        return None
    counts = representation == "counts"  # the anchor rounds (else the writer or nobody)
    return UnmodelledAnchor(cols, X, codes, np.stack(shifts),
                            ref.obs[LIBRARY_KEY].to_numpy() if counts else None,
                            rng if counts else None, np.stack(factors) if scale else None)


def _solve(u: np.ndarray, target: np.ndarray, scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(shifts, factors)`` ``(G,)`` giving the columns of ``u`` the mean ``target``: a shift
    before the clip at 0, or with ``scale`` a factor on ``expm1`` (shift 0; factor 1 and a
    shift where no value can be scaled to the target)."""
    if not scale:
        return clipped_mean_shift(u, target), np.ones(u.shape[1])
    factor, shift = mean_fold_or_shift(u, target)
    return shift, factor


def decoded_changes(cells: CellStore, tokenizer, encode, decoder: GeneDecoder, ref: CellRows,
                    tokens: torch.Tensor, rows_per_chunk: int = 4096) -> dict[tuple, np.ndarray]:
    """Per context of ``ref``'s cells, the change ``(U,)`` of the unmodelled genes' mean that
    ``decoder`` reads from the change of the modelled genes' mean: the generated cells
    (``tokens`` ``(n, T, P)``, one per reference cell) minus the reference cells, both as the
    tokenizer decodes them (``encode``: cells → tokens), so that a tokenizer whose decoding
    differs from the data (scVI's denoised means, a PCA's reconstruction) sees no change where
    nothing changed. Decoded ``rows_per_chunk`` cells at a time."""
    obs = ref.obs  # all columns: a tokenizer may decode with a batch column (scVI)
    keys = cells.context_keys(cells.frame(ref), len(tokens))
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object))
    change = {}
    for j, ctx in enumerate(uniques):
        rows = np.flatnonzero(codes == j)
        diff = np.zeros(len(cells.modelled))
        for s in range(0, len(rows), rows_per_chunk):
            part = rows[s:s + rows_per_chunk]
            z = tokens[torch.as_tensor(part, dtype=torch.long)].float()
            diff += (tokenizer.decode(z, obs=obs.iloc[part]).double()
                     - tokenizer.decode(encode(ref[part]), obs=obs.iloc[part]).double()
                     ).sum(0).numpy()
        change[ctx] = decoder(diff[None] / len(rows))[0]
    return change


def _dense(block: sp.csc_matrix, cols: slice) -> np.ndarray:
    """Columns ``cols`` of a sparse block as a dense float64 array."""
    return np.asarray(block[:, cols].toarray(), dtype=np.float64)


class UnmodelledAnchor:
    """The anchoring of the unmodelled genes of one prediction, applied a chunk at a time.

    Parameters
    ----------
    cols
        Output columns of the unmodelled genes ``(U,)``.
    X
        Their log1p values in the reference cells, CSR ``(n, U)``.
    codes
        Per cell, the row of ``shifts`` of its context (-1: not anchored).
    shifts
        One shift per anchored context and gene ``(k, U)`` (log1p).
    lib
        Library sizes of the reference cells where the anchor rounds to counts, else ``None``.
    rng
        Generator of the counts rounding; ``None`` where it writes log1p.
    factors
        One factor per anchored context and gene ``(k, U)`` applied to ``expm1`` of the values
        before the shift, or ``None`` (shifts only).
    """

    def __init__(self, cols: np.ndarray, X: sp.csr_matrix, codes: np.ndarray,
                 shifts: np.ndarray, lib: np.ndarray | None, rng: np.random.Generator | None,
                 factors: np.ndarray | None = None):
        self.cols, self.X, self.codes, self.shifts = cols, X, codes, shifts
        self.lib, self.rng, self.factors = lib, rng, factors

    def apply(self, out: np.ndarray, start: int, stop: int) -> None:
        """Write the anchored unmodelled genes of cells ``start:stop`` into the chunk ``out``
        ``(stop - start, n_vars)``; call for consecutive chunks in order (counts rounding
        draws from one stream)."""
        u = np.asarray(self.X[start:stop].toarray(), dtype=np.float64)
        code = self.codes[start:stop]
        has = code >= 0
        if self.factors is not None:
            u[has] = np.log1p(self.factors[code[has]] * np.expm1(u[has]))
        u[has] = np.maximum(u[has] + self.shifts[code[has]], 0.0)
        if self.rng is not None:
            u = log1p_to_counts(u, self.lib[start:stop], rng=self.rng, rounding="systematic")
        out[:, self.cols] = u.astype(out.dtype)
