"""Target marks: a shared head that moves the velocity of a perturbation's own target gene."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Inputs of the head per targeted slot: value, the gene's zero level, their difference, the
#: backbone's velocity, time.
_N_IN = 5


def target_slots(atoms: Sequence[str], genes: Sequence[str]) -> list[int]:
    """Slot of each perturbation atom's target gene, ``-1`` where the atom is not a gene.

    Parameters
    ----------
    atoms
        Perturbation atoms in the condition encoder's row order (row ``i + 1`` is
        ``atoms[i]``: the seen atoms, then those known through features).
    genes
        The modelled genes in slot order (a gene tokenizer's ``genes``).

    Returns
    -------
    list of int
        ``[-1, slot(atoms[0]), slot(atoms[1]), ...]``: one entry per encoder row, row 0
        (padding) included.
    """
    pos = {str(g): i for i, g in enumerate(genes)}
    return [-1] + [pos.get(str(a), -1) for a in atoms]


class TargetMarks(nn.Module):
    """Velocity correction of the genes a cell's genetic perturbation targets.

    A perturbation atom whose name is a modelled gene marks that gene's value slot. For each
    marked slot of a cell, a small MLP shared by all genes reads the slot's current value
    ``x``, the gene's zero level ``z`` (the tokenizer's code of zero expression), ``x − z``,
    the backbone's velocity there and the time, and its output is added to that velocity. The
    backbone's per-gene weights (input vectors, output rows) only ever learn the genes they
    belong to; this head is the same function for every gene, so what it learns from the seen
    targets (a knock-out drives its target towards zero expression, an activation away from it)
    applies to a measured gene never perturbed in training. The head's last layer starts at
    zero: a fresh model is unchanged by the marks.

    Parameters
    ----------
    slots
        :func:`target_slots` output (row 0 = padding): the encoder's atom rows → slot or ``-1``.
    floor
        ``(n_slots,)`` zero level of each slot (padding slots: anything finite).
    hidden
        Width of the head.
    """

    def __init__(self, slots: Sequence[int], floor: torch.Tensor, hidden: int = 64):
        super().__init__()
        slots = [int(s) for s in slots]
        n_slots = int(floor.shape[0])
        if not slots or max(slots) >= n_slots or min(slots) < -1:
            raise ValueError(f"slots must be slot indices in [0, {n_slots}) or -1, one per "
                             f"encoder row; got {len(slots)} entries"
                             f"{f' from {min(slots)} to {max(slots)}' if slots else ''}.")
        self.register_buffer("slot", torch.tensor(slots, dtype=torch.long), persistent=False)
        self.register_buffer("floor", floor.detach().float().reshape(-1), persistent=False)
        self.head = nn.Sequential(nn.Linear(_N_IN, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def n_marked(self) -> int:
        """Number of atoms (seen or known through features) that target a modelled gene."""
        return int((self.slot >= 0).sum())

    def flags(self, atoms: torch.Tensor) -> torch.Tensor:
        """Atoms ``(B, M)`` (0 = padding) → ``(B, n_slots)`` 0/1 flags of the targeted slots."""
        slot = self.slot[atoms]  # (B, M)
        flags = torch.zeros(atoms.shape[0], self.floor.shape[0], device=atoms.device)
        flags.scatter_add_(1, slot.clamp_min(0), (slot >= 0).to(flags.dtype))  # misses add 0
        return flags.clamp_max(1.0)

    def forward(self, v: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                atoms: torch.Tensor) -> torch.Tensor:
        """Correct the velocity at the slots the cells' perturbations target.

        The head runs outside autocast, on float32 inputs: the tokens and the time exactly as
        given (not rounded to bf16 under bf16 autocast, where a value of a few units would
        move by up to about 0.015) and the backbone's velocity as it comes (bf16 under
        autocast, converted exactly). Its parameters keep their dtype (float32 unless the
        whole model was cast), and the correction is added in ``v``'s dtype.

        Parameters
        ----------
        v
            Backbone velocity, ``(B, T, P)``.
        x
            Current tokens, ``(B, T, P)``.
        t
            Flow times, ``(B,)``.
        atoms
            Each cell's perturbation atoms as encoder rows, ``(B, M)``; 0 is padding.

        Returns
        -------
        torch.Tensor
            ``v`` with the head's output added at every marked slot, same shape and dtype.
        """
        slot = self.slot[atoms]  # (B, M)
        hit = (slot >= 0).float()  # (B, M)
        idx = slot.clamp_min(0)
        flat_v = v.reshape(len(v), -1)
        flat_x = x.reshape(len(x), -1)
        with torch.autocast(device_type=v.device.type, enabled=False):
            xs = flat_x.gather(1, idx).float()  # (B, M)
            vs = flat_v.gather(1, idx).float()
            z = self.floor[idx]  # float32 buffer
            tt = t.float()[:, None].expand_as(xs)
            feats = torch.stack([xs, z, xs - z, vs, tt], -1)
            w = self.head[0].weight  # float32 unless the whole model was cast
            step = self.head(feats.to(w.dtype)).squeeze(-1).float() * hit  # (B, M)
        return flat_v.scatter_add(1, idx, step.to(v.dtype)).reshape(v.shape)
