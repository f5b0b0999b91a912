"""Data loaders whose position can be saved and restored, for checkpoints that resume exactly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from ._dist import gather_objects, rank_and_world


class EpochBatchSampler(Sampler[list[int]]):
    """Minibatches of a shuffled (or ordered) range, one permutation per epoch, resumable.

    The same batches as ``BatchSampler(RandomSampler(range(n), generator=torch.Generator()
    .manual_seed(seed)), batch_size, drop_last)``: each epoch draws ``torch.randperm(n)`` from
    one seeded generator and cuts it into batches. It also remembers where it is: the
    generator's state when the current epoch began and how many of its batches were handed
    out (:meth:`state_dict`), so that a restored sampler (:meth:`load_state_dict`) continues with
    the very next batch, or with the next epoch's permutation when the epoch was complete.

    In a run of ``W`` processes (``torch.distributed`` initialised, read when the sampler is
    iterated or measured, so that it works under any launcher), every process draws the same
    permutations and process ``r`` takes batches ``r, r + W, r + 2W, ...`` of each epoch:
    ``len(batches) // W`` each, the tail that does not divide evenly is dropped, so that every
    process steps the same number of times and together they see disjoint batches. One process
    (``W = 1``) gets every batch, as without sharding. The saved position (batches handed out by
    this process) is then the same in every process.

    Parameters
    ----------
    n
        Number of items.
    batch_size
        Items per batch (at most ``n``).
    shuffle
        Draw a new permutation each epoch (else items in order).
    seed
        Seed of the permutations.
    drop_last
        Drop the last, incomplete batch (when ``n`` exceeds the batch size).
    rank, world_size
        Shard for process ``rank`` of ``world_size`` (both ``None``: those of the
        ``torch.distributed`` process group when it is initialised, else ``0`` of ``1``).
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int | None = None, world_size: int | None = None):
        if (rank is None) != (world_size is None):
            raise ValueError("EpochBatchSampler: give both rank and world_size, or neither.")
        if world_size is not None and not 0 <= int(rank) < int(world_size):
            raise ValueError(f"EpochBatchSampler: rank {rank} is not in [0, {world_size}).")
        self.rank = None if rank is None else int(rank)
        self.world_size = None if world_size is None else int(world_size)
        self.n = int(n)
        self.batch_size = max(1, min(int(batch_size), self.n))
        self.drop_last = bool(drop_last) and self.n > self.batch_size
        self.generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
        self._epoch_state: torch.Tensor | None = None
        self._done = 0
        self._pending: dict[str, Any] | None = None

    def _shard(self) -> tuple[int, int]:
        """``(rank, world size)``: the given ones, else the process group's."""
        if self.world_size is not None:
            return int(self.rank), self.world_size
        return rank_and_world()

    def _n_batches(self) -> int:
        """Batches of an epoch, all processes together."""
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        _, world = self._shard()
        total = self._n_batches()
        if total < world:
            raise ValueError(f"An epoch has {total} batch(es) of {self.batch_size} items, fewer "
                             f"than the {world} processes training together; lower the batch "
                             "size or use fewer devices.")
        return total // world

    def _order(self) -> torch.Tensor:
        if self.generator is None:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=self.generator)

    def __iter__(self):
        skip = 0
        if self._pending is not None:
            state, self._pending = self._pending, None
            if self.generator is not None and state["epoch_state"] is not None:
                self.generator.set_state(state["epoch_state"])
            skip = int(state["done"])
            if skip >= len(self):  # the saved epoch was complete: start the next one
                self._order()
                skip = 0
        self._epoch_state = None if self.generator is None else self.generator.get_state()
        order = self._order()
        rank, world = self._shard()
        self._done = skip
        for i in range(skip, len(self)):
            self._done = i + 1
            j = rank + i * world  # this process's i-th batch of the epoch
            yield order[j * self.batch_size:(j + 1) * self.batch_size].tolist()

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler is: the generator state at the epoch's start, batches handed out."""
        return {"epoch_state": self._epoch_state, "done": self._done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`) at the next iteration."""
        self._pending = {"epoch_state": state.get("epoch_state"), "done": int(state["done"])}


class ResumableLoader(DataLoader):
    """A ``DataLoader`` of whole minibatches (``dataset[list_of_rows]``) whose position is saved.

    Lightning stores :meth:`state_dict` in its checkpoints and restores it on resume: the
    sampler's position (:class:`EpochBatchSampler`) and the state of every numpy random
    generator the dataset holds (e.g. the draws of source cells), which advance as batches are
    fetched. The loader has its own torch generator, so that starting an epoch does not draw
    from the global random state (which a resumed run restores at its first step).

    In a run of several processes the sampler gives each its share of every epoch's batches,
    and when the loader is first iterated the dataset's numpy generators are reseeded from
    their own next draw (the same in every process) and the process's rank, so that processes
    draw differently; :meth:`state_dict` then holds the generators of every process (gathered:
    all processes must save together, as Lightning's checkpoints do) and each resumes its own.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False):
        sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed,
                                    drop_last=drop_last)
        super().__init__(dataset, sampler=sampler, batch_size=None, num_workers=0,
                         generator=torch.Generator().manual_seed(int(seed)))
        self._rngs_ranked = False  # whether the dataset's generators were made per-process

    def _generators(self) -> dict[str, np.random.Generator]:
        return {k: v for k, v in sorted(vars(self.dataset).items())
                if isinstance(v, np.random.Generator)}

    def __iter__(self):
        self._rank_generators()
        return super().__iter__()

    def _rank_generators(self) -> None:
        """Once, in a multi-process run: reseed the dataset's generators for this process."""
        if self._rngs_ranked:
            return
        self._rngs_ranked = True
        rank, world = rank_and_world()
        if world == 1:
            return
        for g in self._generators().values():
            entropy = int(g.integers(2**63))  # the same in every process
            g.bit_generator.state = type(g.bit_generator)(
                np.random.SeedSequence([entropy, rank])).state

    def state_dict(self) -> dict[str, Any]:
        """Sampler position and the dataset's random generators' states (of every process)."""
        rngs = {k: g.bit_generator.state for k, g in self._generators().items()}
        state = {"sampler": self.sampler.state_dict(), "dataset_rngs": rngs}
        _, world = rank_and_world()
        if world > 1:
            state["dataset_rngs_by_rank"] = gather_objects(rngs)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`)."""
        self.sampler.load_state_dict(state["sampler"])
        rank, world = rank_and_world()
        rngs = state.get("dataset_rngs", {})
        by_rank = state.get("dataset_rngs_by_rank")
        if world > 1:
            if by_rank is None or len(by_rank) != world:
                raise ValueError(f"The checkpoint's data loader state is of "
                                 f"{1 if by_rank is None else len(by_rank)} process(es), this run "
                                 f"has {world}: resume with the same devices and num_nodes.")
            rngs = by_rank[rank]
            self._rngs_ranked = True  # the saved states are already this process's
        gens = self._generators()
        for key, value in rngs.items():
            if key in gens:
                gens[key].bit_generator.state = value


def eval_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Ordered whole minibatches, with the loader's own generator (no global random draw)."""
    bs = max(1, min(batch_size, len(dataset)))
    sampler = BatchSampler(SequentialSampler(range(len(dataset))), batch_size=bs, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0,
                      generator=torch.Generator())
