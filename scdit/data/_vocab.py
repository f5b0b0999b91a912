"""Vocabularies for perturbations (with combinations ``A+B``) and covariates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._labels import split_label


@dataclass(frozen=True)
class ConditionVocab:
    """Perturbation vocabulary: atoms (single perturbations) from which conditions are built.

    A condition label is the control label (no atom), one atom, or several atoms joined by
    ``separator`` (order does not matter: ``"A+B"`` equals ``"B+A"``). ``atoms`` were seen in
    training; ``featured`` are perturbations never seen but known through perturbation features
    (they can be predicted; their rows follow the seen atoms).
    """

    control: str
    separator: str = "+"
    atoms: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    featured: tuple[str, ...] = ()

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
        """Atom → row in the embedding table (row 0 is reserved; seen atoms start at 1, featured
        atoms follow them)."""
        return {a: i + 1 for i, a in enumerate(self.atoms + self.featured)}

    def with_featured(self, names: Iterable[str]) -> ConditionVocab:
        """Copy with ``names`` (minus the seen atoms and the control) as featured atoms."""
        seen = set(self.atoms)
        extra = tuple(dict.fromkeys(str(n) for n in names if str(n) not in seen
                                    and str(n) != self.control))
        return ConditionVocab(self.control, self.separator, self.atoms, self.conditions, extra)

    def members(self, label: str) -> tuple[str, ...]:
        """Atoms of a label (empty for control)."""
        return split_label(label, self.control, self.separator)

    def unknown_atoms(self, labels: Iterable[str]) -> list[str]:
        """Atoms of ``labels`` neither seen in training nor known through features."""
        known = set(self.atoms) | set(self.featured)
        return sorted({a for lab in set(labels) for a in self.members(lab) if a not in known})

    def encode(self, labels: Sequence[str], max_members: int | None = None) -> np.ndarray:
        """Integer matrix ``(n, max_members)`` of atom rows, 0-padded (control = all zeros)."""
        missing = self.unknown_atoms(labels)
        if missing:
            how = ("they are not in the model's perturbation feature table either; refit with a "
                   "perturbation_features table that has rows for them" if self.featured else
                   "the model has no perturbation features; refit with "
                   "fit(..., perturbation_features=<table with a row per perturbation>) (or, for "
                   "genetic perturbations of measured genes, the data-derived default) to predict "
                   "unseen perturbations")
            raise KeyError(
                f"Unknown perturbation(s) {missing}: not seen in training and {how}. Seen "
                f"perturbations: {list(self.atoms)[:20]}{' ...' if len(self.atoms) > 20 else ''}."
            )
        index = self.atom_index
        codes, uniq = pd.factorize(pd.Index(list(labels), dtype=object), use_na_sentinel=False)
        rows = [[index[a] for a in self.members(lab)] for lab in uniq]
        width = max_members or max([1] + [len(r) for r in rows])
        table = np.zeros((len(rows), width), dtype=np.int64)
        for i, ids in enumerate(rows):
            table[i, : len(ids)] = ids
        return table[codes] if len(codes) else np.zeros((0, width), dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"control": self.control, "separator": self.separator, "atoms": list(self.atoms),
                "conditions": list(self.conditions), "featured": list(self.featured)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConditionVocab:
        """Inverse of :meth:`to_dict`."""
        return cls(control=d["control"], separator=d["separator"], atoms=tuple(d["atoms"]),
                   conditions=tuple(d["conditions"]), featured=tuple(d.get("featured", ())))


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


def parse_doses(labels: Sequence[str], doses: Sequence, vocab: ConditionVocab,
                width: int, key: str = "dose") -> np.ndarray:
    """Dose of each member, aligned with :meth:`ConditionVocab.encode` columns ``(n, width)``.

    A dose is a number (given to every member) or a string ``"a+b"`` (one dose per member, in
    the order the members are written in the label, with the vocabulary's separator). Control
    cells and padding get 0. Missing/non-numeric doses raise a clear error.
    """
    out = np.zeros((len(labels), width), dtype=np.float32)
    sep = vocab.separator
    cache: dict[tuple[str, str], np.ndarray] = {}
    for i, (lab, d) in enumerate(zip(labels, doses, strict=True)):
        lab = str(lab)
        if lab == vocab.control:
            continue
        k = (lab, str(d))
        if k not in cache:
            written = split_label(lab, vocab.control, sep, sort=False)
            parts = str(d).split(sep) if sep and isinstance(d, str) else [d]
            try:
                vals = [float(p) for p in parts]
            except (TypeError, ValueError):
                raise ValueError(f"obs[{key!r}] has a non-numeric dose {d!r} (condition {lab!r}); "
                                 "use numbers, or 'a+b' for combinations.") from None
            if len(vals) == 1:
                vals = vals * len(written)
            if len(vals) != len(written) or not np.all(np.isfinite(vals)) or min(vals) < 0:
                raise ValueError(f"obs[{key!r}] dose {d!r} does not fit condition {lab!r}: give one "
                                 "non-negative number, or one per member joined by "
                                 f"{sep!r}.")
            order = np.argsort(written, kind="stable")  # encode() sorts members by name
            cache[k] = np.asarray(vals, dtype=np.float32)[order]
        v = cache[k]
        out[i, : len(v)] = v
    return out
