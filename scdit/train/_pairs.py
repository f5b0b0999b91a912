"""Fixed (data, source) token pairs: the training set of reflow (:func:`scdit.reflow`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class PairDataset(Dataset):
    """Pairs ``(x0, x1)`` of tokens ``(n, T, P)`` with their encoded conditions.

    ``x1`` is a source draw (noise, or a control cell plus noise) and ``x0`` the cell a velocity
    field integrated it to. ``dataset[list_of_rows]`` returns a batch ``{"x0", "x1", "atoms",
    "covariates"[, "dose"]}`` like :class:`scdit.data.CellDataset` returns cells; the
    :class:`FlowModule` with ``source="pairs"`` trains on the straight paths between them.
    """

    def __init__(self, x0: torch.Tensor, x1: torch.Tensor, atoms, covariates, *, dose=None):
        self.x0 = torch.as_tensor(x0, dtype=torch.float32)
        self.x1 = torch.as_tensor(x1, dtype=torch.float32)
        self.atoms = torch.as_tensor(atoms, dtype=torch.long)
        self.covariates = torch.as_tensor(covariates, dtype=torch.long)
        self.dose = None if dose is None else torch.as_tensor(dose, dtype=torch.float32)
        n = len(self.x0)
        if not (len(self.x1) == len(self.atoms) == len(self.covariates) == n) \
                or self.x0.shape != self.x1.shape:
            raise ValueError(f"PairDataset: x0 {tuple(self.x0.shape)}, x1 {tuple(self.x1.shape)}, "
                             f"atoms {len(self.atoms)} and covariates {len(self.covariates)} "
                             "rows must agree.")

    def __len__(self) -> int:
        return len(self.x0)

    def __getitem__(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(np.sort(np.asarray(rows, dtype=np.int64)))
        batch = {"x0": self.x0[rows], "x1": self.x1[rows], "atoms": self.atoms[rows],
                 "covariates": self.covariates[rows]}
        if self.dose is not None:
            batch["dose"] = self.dose[rows]
        return batch

    def subset(self, rows) -> PairDataset:
        """The pairs at ``rows``."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return PairDataset(self.x0[rows], self.x1[rows], self.atoms[rows],
                           self.covariates[rows],
                           dose=None if self.dose is None else self.dose[rows])
