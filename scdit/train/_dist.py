"""Where a process stands in a multi-process (distributed) run: rank, world size, gathering."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

#: Environment variables that launchers (Lightning, torchrun, SLURM, jsrun) set to a process's
#: rank; read by :func:`is_global_zero` before (or without) a process group.
RANK_VARIABLES = ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID",
                  "JSM_NAMESPACE_RANK")


def rank_and_world() -> tuple[int, int]:
    """``(global rank, world size)`` of this process: those of the initialised
    ``torch.distributed`` process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_global_zero() -> bool:
    """Whether this process is the one that should write files (save the model, print).

    ``True`` outside multi-process runs. In a run on several devices (``TrainConfig(devices=2)``
    or more, or several nodes) every process runs the script and ends ``scdit.fit`` with the
    same model; only global rank 0 answers ``True``, so that a script saves the model once::

        model = scdit.fit(adata, "perturbation", train={"devices": 2})
        if scdit.train.is_global_zero():
            model.save("model")

    The rank is that of the ``torch.distributed`` process group when one is initialised, else
    the one the launcher wrote in the environment (``RANK``, ``NODE_RANK`` and ``LOCAL_RANK``,
    ``SLURM_PROCID``, ...): all must be 0 or unset.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for key in RANK_VARIABLES:
        value = os.environ.get(key, "0").strip() or "0"
        if value != "0":
            return False
    return True


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` outside distributed runs).

    A collective: every process of the group must call it at the same point.
    """
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed for process ``rank`` of a run seeded ``seed`` (distinct per rank)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def seed_rank(seed: int, rank: int) -> None:
    """Seed the global random states (torch, numpy, Python) for process ``rank``."""
    s = rank_seed(seed, rank)
    torch.manual_seed(s)
    np.random.seed(s)  # noqa: NPY002 - the legacy global state, which code may draw from
    random.seed(s)
