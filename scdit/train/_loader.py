"""Data loaders whose position can be saved and restored, for checkpoints that resume exactly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler


class EpochBatchSampler(Sampler[list[int]]):
    """Minibatches of a shuffled (or ordered) range, one permutation per epoch, resumable.

    The same batches as ``BatchSampler(RandomSampler(range(n), generator=torch.Generator()
    .manual_seed(seed)), batch_size, drop_last)``: each epoch draws ``torch.randperm(n)`` from
    one seeded generator and cuts it into batches. It also remembers where it is: the
    generator's state when the current epoch began and how many of its batches were handed
    out (:meth:`state_dict`), so that a restored sampler (:meth:`load_state_dict`) continues with
    the very next batch, or with the next epoch's permutation when the epoch was complete.

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
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True):
        self.n = int(n)
        self.batch_size = max(1, min(int(batch_size), self.n))
        self.drop_last = bool(drop_last) and self.n > self.batch_size
        self.generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
        self._epoch_state: torch.Tensor | None = None
        self._done = 0
        self._pending: dict[str, Any] | None = None

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

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
        self._done = skip
        for i in range(skip, len(self)):
            self._done = i + 1
            yield order[i * self.batch_size:(i + 1) * self.batch_size].tolist()

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
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False):
        sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed,
                                    drop_last=drop_last)
        super().__init__(dataset, sampler=sampler, batch_size=None, num_workers=0,
                         generator=torch.Generator().manual_seed(int(seed)))

    def _generators(self) -> dict[str, np.random.Generator]:
        return {k: v for k, v in sorted(vars(self.dataset).items())
                if isinstance(v, np.random.Generator)}

    def state_dict(self) -> dict[str, Any]:
        """Sampler position and the dataset's random generators' states."""
        return {"sampler": self.sampler.state_dict(),
                "dataset_rngs": {k: g.bit_generator.state for k, g in self._generators().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`)."""
        self.sampler.load_state_dict(state["sampler"])
        gens = self._generators()
        for key, value in state.get("dataset_rngs", {}).items():
            if key in gens:
                gens[key].bit_generator.state = value


def eval_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Ordered whole minibatches, with the loader's own generator (no global random draw)."""
    bs = max(1, min(batch_size, len(dataset)))
    sampler = BatchSampler(SequentialSampler(range(len(dataset))), batch_size=bs, drop_last=False)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0,
                      generator=torch.Generator())
