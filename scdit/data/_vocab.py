"""Vocabularies for perturbations (with combinations ``A+B``) and covariates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ConditionVocab:
    """Perturbation vocabulary: atoms (single perturbations) from which conditions are built.

    A condition label is the control label (no atom), one atom, or several atoms joined by
    ``separator`` (order does not matter: ``"A+B"`` equals ``"B+A"``).
    """

    control: str
    separator: str = "+"
    atoms: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()

    @classmethod
    def build(cls, labels: Iterable[str], control: str, separator: str = "+") -> ConditionVocab:
        """Collect atoms and conditions from training labels."""
        conds = sorted(set(map(str, labels)))
        atoms: set[str] = set()
        for c in conds:
            atoms.update(split_label(c, control, separator))
        return cls(control=control, separator=separator, atoms=tuple(sorted(atoms)),
                   conditions=tuple(conds))

    @property
    def atom_index(self) -> dict[str, int]:
        """Atom → row in the embedding table (row 0 is reserved; atoms start at 1)."""
        return {a: i + 1 for i, a in enumerate(self.atoms)}

    def members(self, label: str) -> tuple[str, ...]:
        """Atoms of a label (empty for control)."""
        return split_label(label, self.control, self.separator)

    def unknown_atoms(self, labels: Iterable[str]) -> list[str]:
        """Atoms of ``labels`` that were never seen in training."""
        known = set(self.atoms)
        return sorted({a for lab in labels for a in self.members(lab) if a not in known})

    def encode(self, labels: Sequence[str], max_members: int | None = None) -> np.ndarray:
        """Integer matrix ``(n, max_members)`` of atom rows, 0-padded (control = all zeros)."""
        missing = self.unknown_atoms(labels)
        if missing:
            raise KeyError(
                f"Unknown perturbation(s) {missing}: not seen in training. Predicting unseen "
                "perturbations needs perturbation features, which this version of scdit does not "
                "support yet; predict combinations of seen perturbations instead ('A+B'); "
                f"known perturbations: {list(self.atoms)[:20]}{' ...' if len(self.atoms) > 20 else ''}."
            )
        index = self.atom_index
        uniq = {lab: [index[a] for a in self.members(lab)] for lab in set(labels)}
        width = max_members or max([1] + [len(v) for v in uniq.values()])
        out = np.zeros((len(labels), width), dtype=np.int64)
        for i, lab in enumerate(labels):
            ids = uniq[lab]
            out[i, : len(ids)] = ids
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"control": self.control, "separator": self.separator, "atoms": list(self.atoms),
                "conditions": list(self.conditions)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionVocab:
        """Inverse of :meth:`to_dict`."""
        return cls(control=d["control"], separator=d["separator"], atoms=tuple(d["atoms"]),
                   conditions=tuple(d["conditions"]))


def split_label(label: str, control: str, separator: str = "+") -> tuple[str, ...]:
    """Members of a condition label, sorted; control and the control token inside combos dropped."""
    if label == control:
        return ()
    parts = [p.strip() for p in str(label).split(separator)] if separator else [str(label)]
    return tuple(sorted(p for p in parts if p and p != control))


@dataclass(frozen=True)
class CovariateVocab:
    """Categories of each covariate key (index 0 reserved for "unknown")."""

    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, obs, keys: Sequence[str]) -> CovariateVocab:
        """Collect sorted categories of each key from ``obs``."""
        return cls({k: tuple(sorted(map(str, obs[k].astype(str).unique()))) for k in keys})

    @property
    def keys(self) -> tuple[str, ...]:
        """Covariate keys in order."""
        return tuple(self.categories)

    def sizes(self) -> list[int]:
        """Embedding table sizes (categories + 1 for the reserved index)."""
        return [len(v) + 1 for v in self.categories.values()]

    def encode(self, obs) -> np.ndarray:
        """Integer matrix ``(n, n_keys)``; unknown categories raise a clear error."""
        n = len(obs)
        out = np.zeros((n, len(self.categories)), dtype=np.int64)
        for j, (key, cats) in enumerate(self.categories.items()):
            if key not in obs:
                raise KeyError(f"Covariate {key!r} is required (model trained with it); pass it.")
            lookup = {c: i + 1 for i, c in enumerate(cats)}
            vals = np.asarray(obs[key]).astype(str)
            unknown = sorted(set(map(str, vals)) - set(lookup))  # plain str in the message
            if unknown:
                raise KeyError(
                    f"Unknown value(s) {unknown} for covariate {key!r}; values seen in training: "
                    f"{list(cats)}."
                )
            out[:, j] = [lookup[v] for v in vals]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {k: list(v) for k, v in self.categories.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CovariateVocab:
        """Inverse of :meth:`to_dict`."""
        return cls({k: tuple(v) for k, v in d.items()})
