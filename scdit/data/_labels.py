"""Condition labels: the control label and combinations ``"A+B"``, parsed in one place.

A condition label is the control label, one perturbation, or several perturbations joined by a
separator (``"+"`` by default). Order does not matter: ``"A+B"`` and ``"B+A"`` are the same
condition, whose *canonical* label lists its members sorted (``"A+B"``). A member equal to the
control label is dropped (``"A+ctrl"`` is the single ``"A"``, as GEARS writes singles).
Malformed labels (empty, space-padded, empty or repeated members) are errors, never silently
repaired: see :func:`label_problem`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

#: Control labels recognised automatically (compared case-insensitively).
COMMON_CONTROL_LABELS: tuple[str, ...] = (
    "control", "ctrl", "non-targeting", "nontargeting", "non_targeting", "nt", "dmso",
    "vehicle", "unperturbed", "none",
)



def label_rules(separator: str | None = "+") -> str:
    """How condition labels are written (appended to every label error)."""
    if not separator:
        return "A label is the control label or one perturbation, without surrounding spaces."
    return (f"A label is the control label, one perturbation 'A', or members joined by "
            f"{separator!r}, 'A{separator}B' (no empty, repeated or space-padded members).")


def label_problem(label: str, separator: str | None = "+") -> str | None:
    """What is wrong with a condition label, or ``None`` when it is well formed.

    A well-formed label is non-empty, has no whitespace at either end, and, with a separator,
    consists of non-empty members without surrounding whitespace, none repeated (``"A+A"``
    would silently become a double dose of ``A``).

    Parameters
    ----------
    label
        A condition label.
    separator
        Separator of combinations; ``None`` or ``""`` checks the label as one member.

    Returns
    -------
    A short description of the problem (for error messages), or ``None``.

    Examples
    --------
    >>> label_problem("A+B") is None
    True
    >>> label_problem("A+")
    "an empty member (a leading, trailing or doubled separator '+')"
    """
    label = str(label)
    if not label.strip():
        return "an empty or whitespace-only label"
    if label != label.strip():
        return "whitespace at the start or end"
    if not separator:
        return None
    parts = label.split(separator)
    if any(not p for p in parts):
        return f"an empty member (a leading, trailing or doubled separator {separator!r})"
    if any(p != p.strip() for p in parts):
        return f"whitespace around a member (write members joined by {separator!r} without spaces)"
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        return f"a repeated member ({', '.join(map(repr, repeated))})"
    return None


def split_label(label: str, control: str | None = None, separator: str | None = "+", *,
                sort: bool = True) -> tuple[str, ...]:
    """Members of a condition label; the one parser of combination labels in scdit.

    Parameters
    ----------
    label
        A condition label, e.g. ``"B+A"``.
    control
        The control label: it has no member, and a member equal to it is dropped.
    separator
        Separator of combinations; ``None`` or ``""`` treats every label as one member.
    sort
        Sort the members (the default: order does not matter); ``False`` keeps the order in
        which they are written (to align per-member values such as doses written ``"a+b"``).

    Returns
    -------
    The members, e.g. ``("A", "B")``; ``()`` for the control label.

    Raises
    ------
    ValueError
        For a malformed label (see :func:`label_problem`): empty, whitespace at either end or
        around a member, an empty member (``"A+"``, ``"+B"``, ``"A++B"``, ``"+"``) or a repeated
        member (``"A+A"``). Nothing is silently dropped or merged.

    Examples
    --------
    >>> split_label("B+A")
    ('A', 'B')
    >>> split_label("A+ctrl", "ctrl")
    ('A',)
    """
    label = str(label)
    problem = label_problem(label, separator)
    if problem is not None:
        raise ValueError(f"Malformed condition label {label!r}: {problem}. "
                         f"{label_rules(separator)}")
    if control is not None and label == control:
        return ()
    parts = label.split(separator) if separator else [label]
    parts = [p for p in parts if p != control]
    return tuple(sorted(parts)) if sort else tuple(parts)


def check_labels(labels, separator: str | None = "+", *, where: str = "the labels") -> None:
    """Raise one clear error for every malformed label among ``labels`` (see
    :func:`label_problem`), naming up to five of them with their numbers of cells.

    Parameters
    ----------
    labels
        Condition labels, one per cell (any iterable of strings).
    separator
        Separator of combinations.
    where
        Where the labels come from, for the message (e.g. ``"adata.obs['condition']"``).

    Raises
    ------
    ValueError
        If any label is malformed.
    """
    counts = pd.Series(np.asarray(list(labels), dtype=object)).astype(str).value_counts(sort=False)
    bad = {lab: (int(n), p) for lab, n in counts.items()
           if (p := label_problem(lab, separator)) is not None}
    if not bad:
        return
    shown = "; ".join(f"{lab!r} ({n} cell{'s' if n != 1 else ''}: {p})"
                      for lab, (n, p) in sorted(bad.items())[:5])
    more = f"; ... (+{len(bad) - 5} more)" if len(bad) > 5 else ""
    n_cells = sum(n for n, _ in bad.values())
    raise ValueError(
        f"{where} has {len(bad)} malformed label(s) on {n_cells} cell(s): {shown}{more}. "
        f"{label_rules(separator)} Fix the labels (e.g. .str.strip(), the control label for unperturbed "
        "cells) or drop those cells."
    )


def canonical_label(label: str, control: str | None = None, separator: str | None = "+") -> str:
    """The order-free form of a condition label: its members sorted and joined by ``separator``.

    The control label (or a label without members) maps to ``control``.

    Examples
    --------
    >>> canonical_label("B+A", "ctrl")
    'A+B'
    """
    members = split_label(label, control, separator)
    if not members:
        return str(label) if control is None else control
    return (separator or "").join(members)


def detect_control(labels: Iterable[str], control: str | None = None) -> str:
    """The control label among ``labels``: ``control`` when given, else auto-detected.

    Parameters
    ----------
    labels
        Condition labels of the cells (any iterable; categorical Series work).
    control
        The control label; it must occur in ``labels``. ``None`` looks for exactly one label
        among :data:`COMMON_CONTROL_LABELS` (case-insensitive).

    Returns
    -------
    The control label as written in ``labels``.

    Raises
    ------
    ValueError
        If ``control`` does not occur, or no / several common control labels occur.
    """
    if not hasattr(labels, "__len__"):
        labels = list(labels)
    counts = pd.Series(np.asarray(labels, dtype=object)).astype(str).value_counts(sort=False)
    seen = counts.index.to_numpy()
    if control is not None:
        if str(control) not in set(seen):
            raise ValueError(
                f"Control label {control!r} not found: control={control!r} does not occur in the "
                f"condition column. Labels seen: {preview(seen)}. Pass control='<label of "
                "unperturbed cells>'."
            )
        return str(control)
    found = control_like(seen)
    if len(found) > 1:
        shown = ", ".join(f"{f!r} ({int(counts[f])} cells)" for f in found)
        raise ValueError(
            f"Several control labels found: {shown}; scdit cannot tell which cells are the "
            "unperturbed ones. Pass control='<label of unperturbed cells>' to choose one (the "
            "others are then perturbations), or give them one label."
        )
    if not found:
        raise ValueError(
            "No control cells found. No control label among the common ones "
            f"({', '.join(COMMON_CONTROL_LABELS)}; case-insensitive) occurs in the condition "
            f"column. Labels seen: {preview(seen)}. Pass control='<label of unperturbed cells>'."
        )
    return found[0]


def control_like(labels: Iterable[str]) -> list[str]:
    """The distinct labels among ``labels`` that are common control labels (sorted)."""
    return sorted({str(s) for s in labels if str(s).lower() in COMMON_CONTROL_LABELS})


def preview(values, n: int = 20) -> str:
    """The first ``n`` of ``values``, sorted and quoted, then ``(+k more)``: for error messages."""
    vals = sorted(map(str, values))
    more = f" ... (+{len(vals) - n} more)" if len(vals) > n else ""
    return ", ".join(repr(v) for v in vals[:n]) + more
