"""Random streams of one label's prediction, independent of the list it is predicted in."""

from __future__ import annotations

import hashlib

import numpy as np

#: Streams of a label's prediction: reference/control cells, flow noise, rounding of the
#: modelled genes to counts, anchoring of the unmodelled genes, target prior (one per gene).
CELLS, FLOW, COUNTS, ANCHOR, PRIOR = range(5)


class LabelSeeds:
    """Independent random streams of one label's prediction, derived from ``(seed, label)``.

    Each stream is a NumPy generator seeded by ``SeedSequence((seed, h), spawn_key=(stream,
    ...))`` where ``h`` is 64 bits of the SHA-256 of the canonical label (stable across
    processes, unlike Python's salted ``hash``). Streams never share draws, so drawing one
    chunk of cells after another gives the same values as drawing them all at once.

    Parameters
    ----------
    seed
        The prediction's seed (a non-negative integer).
    label
        The canonical label (members sorted, or the control label).
    """

    def __init__(self, seed: int, label: str):
        digest = hashlib.sha256(str(label).encode("utf-8")).digest()
        self.entropy = (int(seed), int.from_bytes(digest[:8], "little"))

    def rng(self, stream: int, *extra: int) -> np.random.Generator:
        """The generator of ``stream`` (one of the module's stream constants), optionally
        split further by ``extra`` integers (e.g. a gene index)."""
        key = (int(stream), *map(int, extra))
        return np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=key))

    def torch_seed(self) -> int:
        """Seed of the flow's noise (``torch.Generator.manual_seed``)."""
        return int(self.rng(FLOW).integers(2**63))
