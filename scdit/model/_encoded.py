"""Tokens of cells encoded a range of rows at a time, and their mean token per context."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import torch

from ._cells import CellStore

#: Cells encoded (and token means accumulated) at a time; the PCA tokenizer's own chunk of
#: 4,096 cells, so that chunking does not change its output.
ENCODE_ROWS = 4096


class EncodedCells:
    """The tokens of ``cells``, encoded when a range of rows is read (``tokens[a:b]``), so that
    the tokens of all the cells never need to be held at once.

    Parameters
    ----------
    encode
        ``AnnData -> (n, T, P)`` tokens (:meth:`ScDiT.encode`).
    cells
        The cells, in the training genes and representation.
    """

    def __init__(self, encode, cells: ad.AnnData):
        self.encode, self.cells = encode, cells

    def __len__(self) -> int:
        return self.cells.n_obs

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice):
            raise TypeError("EncodedCells are read by ranges of rows (tokens[a:b]).")
        return self.encode(self.cells[rows])


def context_means(cells: CellStore, tokens: torch.Tensor | EncodedCells | None,
                   cov_df: pd.DataFrame | None) -> dict[tuple[str, ...], np.ndarray]:
    """Per context of ``cov_df``: the mean token ``(T·P,)`` of ``tokens`` (empty without),
    accumulated in float64 over :data:`ENCODE_ROWS` consecutive rows at a time."""
    if tokens is None:
        return {}
    n = len(tokens)
    ctx_of = cells.context_keys(cov_df, n)
    order = {ctx: i for i, ctx in enumerate(dict.fromkeys(ctx_of))}
    code = np.array([order[c] for c in ctx_of], dtype=np.int64)
    sums: list[torch.Tensor | None] = [None] * len(order)
    for s in range(0, n, ENCODE_ROWS):
        flat = torch.as_tensor(tokens[s:s + ENCODE_ROWS]).flatten(1)
        part = code[s:s + ENCODE_ROWS]
        for i in np.unique(part):
            rows = flat if (part == i).all() else flat[torch.as_tensor(np.flatnonzero(part == i))]
            add = rows.double().sum(0)
            sums[i] = add if sums[i] is None else sums[i] + add
    counts = np.bincount(code, minlength=len(order))
    return {ctx: (sums[i] / int(counts[i])).numpy() for ctx, i in order.items()}
