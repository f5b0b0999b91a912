"""The :class:`Split` container and the leakage check every split function runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._labels import detect_control, split_label
from ._labels import preview as _preview
from ._setup import condition_labels

__all__ = ["LeakageError", "Split", "check_leakage"]


class LeakageError(ValueError):
    """A split lets held-out cells or conditions into the training side."""


def _names(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def _jsonable(obj: Any) -> Any:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (np.ndarray, set, frozenset)):
            return sorted(o) if isinstance(o, (set, frozenset)) else o.tolist()
        raise TypeError(f"Split params must be JSON-serialisable, got {type(o).__name__}: {o!r}")

    return json.loads(json.dumps(obj, default=default))


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """A train/test (optionally validation) partition of cells, by ``obs_names``.

    Parameters
    ----------
    train, test
        ``obs_names`` of the training and test cells.
    val
        Optional ``obs_names`` of validation cells (carved from the training side).
    kind
        Which split function produced it (e.g. ``"unseen_perturbations"``).
    params
        JSON-serialisable arguments and findings (control label, seed, seen counts, ...).
    held_out_conditions
        Condition labels whose cells (within ``held_out_context`` if given) must not be trained on.
    held_out_context
        ``{obs_key: value or [values]}`` restricting ``held_out_conditions`` to a context, or None.
    """

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray | None = None
    kind: str = "custom"
    params: dict = field(default_factory=dict)
    held_out_conditions: list[str] = field(default_factory=list)
    held_out_context: dict | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "train", _names(self.train))
        put(self, "test", _names(self.test))
        put(self, "val", None if self.val is None else _names(self.val))
        put(self, "params", _jsonable(dict(self.params)))
        put(self, "held_out_conditions", [str(c) for c in self.held_out_conditions])
        ctx = self.held_out_context
        put(self, "held_out_context", None if ctx is None else _jsonable(dict(ctx)))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation (lists, dicts, strings, numbers)."""
        return {
            "format": "scdit.Split", "version": 1, "kind": self.kind, "params": self.params,
            "held_out_conditions": self.held_out_conditions,
            "held_out_context": self.held_out_context, "train": self.train.tolist(),
            "test": self.test.tolist(), "val": None if self.val is None else self.val.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        """Inverse of :meth:`to_dict`."""
        keys = ("train", "test", "val", "kind", "params", "held_out_conditions", "held_out_context")
        return cls(**{k: d.get(k) for k in keys if d.get(k) is not None})

    def to_json(self, path: str | Path) -> None:
        """Write the split as plain JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_json(cls, path: str | Path) -> Split:
        """Read a split written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def _mask(self, adata: AnnData, names: np.ndarray | None, which: str) -> np.ndarray:
        index = pd.Index(adata.obs_names)
        if not index.is_unique:
            raise ValueError("adata.obs_names are not unique; call adata.obs_names_make_unique().")
        mask = np.zeros(adata.n_obs, dtype=bool)
        if names is None or len(names) == 0:
            return mask
        pos = index.get_indexer(names)
        if (pos < 0).any():
            missing = names[pos < 0]
            raise ValueError(
                f"{len(missing)} {which} obs_names of this split are not in adata (e.g. "
                f"{_preview(missing[:5])}); was the split made on a different AnnData?"
            )
        mask[pos] = True
        return mask

    def masks(self, adata: AnnData) -> tuple[np.ndarray, np.ndarray]:
        """Boolean ``(train_mask, test_mask)`` over ``adata.obs_names``."""
        return self._mask(adata, self.train, "train"), self._mask(adata, self.test, "test")

    def val_mask(self, adata: AnnData) -> np.ndarray:
        """Boolean validation mask over ``adata.obs_names`` (all False without a val set)."""
        return self._mask(adata, self.val, "val")

    def subset(self, adata: AnnData) -> tuple[AnnData, AnnData]:
        """Copies ``(adata_train, adata_test)``, in ``adata``'s cell order."""
        train, test = self.masks(adata)
        return adata[train].copy(), adata[test].copy()

    def summary(self) -> str:
        """Human-readable description of the split."""
        n_val = 0 if self.val is None else len(self.val)
        lines = [f"Split kind={self.kind!r}: {len(self.train)} train, {n_val} val, "
                 f"{len(self.test)} test cells"]
        if self.held_out_conditions:
            lines.append(f"held-out conditions ({len(self.held_out_conditions)}): "
                         f"{_preview(self.held_out_conditions, 10)}")
        if self.held_out_context:
            lines.append(f"held-out context: {self.held_out_context}")
        seen = self.params.get("seen_counts")
        if seen:
            hist = pd.Series(seen).value_counts().sort_index()
            lines.append("combinations by seen count: "
                         + ", ".join(f"seen-{k}: {v}" for k, v in hist.items()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        n_val = 0 if self.val is None else len(self.val)
        return (f"Split(kind={self.kind!r}, n_train={len(self.train)}, n_val={n_val}, "
                f"n_test={len(self.test)}, held_out_conditions={len(self.held_out_conditions)})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Split) and self.to_dict() == other.to_dict()


def _isin(col: pd.Series, values: Sequence) -> np.ndarray:
    """Mask of ``col`` values in ``values`` (numeric tolerance when values are numbers)."""
    vals = list(values)
    if vals and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                    for v in vals):
        num = pd.to_numeric(pd.Series(col).astype(object), errors="coerce").to_numpy(float)
        return np.isclose(num[:, None], np.asarray(vals, float)[None, :]).any(axis=1)
    return pd.Series(col).astype(str).isin([str(v) for v in vals]).to_numpy()


def _context_mask(adata: AnnData, context: dict | None) -> np.ndarray:
    mask = np.ones(adata.n_obs, dtype=bool)
    for key, value in (context or {}).items():
        mask &= _isin(_obs_column(adata, key), value if isinstance(value, list) else [value])
    return mask


def _obs_column(adata: AnnData, key: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise KeyError(
            f"{key!r} is not a column of adata.obs; available: {list(adata.obs.columns)}"
        )
    return adata.obs[key]


def check_leakage(split: Split, adata: AnnData, condition_key: str, *, separator: str = "+"
                  ) -> None:
    """Raise :class:`LeakageError` if ``split`` lets held-out information into training.

    Checks that train, val and test share no cell; that no cell of a held-out condition (within
    the held-out context, if any) is on the training side; and, for combination splits, that each
    recorded seen count equals the number of the combination's members that are trained on as
    single perturbations and that no held-out gene appears in any training condition.

    Parameters
    ----------
    split
        The split to verify.
    adata
        The AnnData it was made from (must contain all of its ``obs_names``).
    condition_key
        ``adata.obs`` column with condition labels.
    separator
        Separator of combination labels (``"A+B"``).

    Raises
    ------
    LeakageError
        On the first violation found, naming the offending cells or conditions.
    ValueError
        If ``adata`` lacks some of the split's ``obs_names``.
    """
    labels = condition_labels(adata, condition_key).to_numpy()
    train, test = split.masks(adata)
    val = split.val_mask(adata)
    names = np.asarray(adata.obs_names)
    for a, b, what in ((train, test, "train and test"), (val, test, "val and test"),
                       (train, val, "train and val")):
        if (a & b).any():
            raise LeakageError(f"{int((a & b).sum())} cells are in both {what}, e.g. "
                               f"{_preview(names[a & b][:5])}.")
    side = train | val
    held = side & np.isin(labels, split.held_out_conditions) & _context_mask(
        adata, split.held_out_context)
    if held.any():
        where = f" within {split.held_out_context}" if split.held_out_context else ""
        raise LeakageError(f"Held-out conditions {_preview(np.unique(labels[held]), 10)} have "
                           f"{int(held.sum())} cells{where} on the training side.")
    seen_counts = split.params.get("seen_counts")
    if seen_counts is None:
        return
    control = split.params.get("control") or detect_control(labels, None)
    members = {c: split_label(c, control, separator) for c in np.unique(labels[side])}
    in_train = set(np.unique(labels[train]).tolist())
    trained_singles = {m[0] for c, m in members.items() if len(m) == 1 and c in in_train}
    wrong = {c: (n, len(set(split_label(c, control, separator)) & trained_singles))
             for c, n in seen_counts.items()}
    wrong = {c: v for c, v in wrong.items() if v[0] != v[1]}
    if wrong:
        raise LeakageError(f"Seen counts (recorded, actual) do not match training: {wrong}.")
    genes = set(split.params.get("held_out_genes", []))
    leaky = sorted(c for c, m in members.items() if genes & set(m))
    if leaky:
        raise LeakageError(f"Training conditions {leaky} contain held-out genes {sorted(genes)}.")
