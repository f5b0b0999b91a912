"""Condition labels: the control label and combinations ``"A+B"``, parsed in one place.

A condition label is the control label, one perturbation, or several perturbations joined by a
separator (``"+"`` by default). Order does not matter: ``"A+B"`` and ``"B+A"`` are the same
condition, whose *canonical* label lists its members sorted (``"A+B"``). A member equal to the
control label is dropped (``"A+ctrl"`` is the single ``"A"``, as GEARS writes singles).
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
    The members, e.g. ``("A", "B")``; ``()`` for the control label. Whitespace around members
    and empty parts are dropped.

    Examples
    --------
    >>> split_label("B+A")
    ('A', 'B')
    >>> split_label("A+ctrl", "ctrl")
    ('A',)
    """
    label = str(label)
    if control is not None and label == control:
        return ()
    parts = [p.strip() for p in label.split(separator)] if separator else [label.strip()]
    parts = [p for p in parts if p and p != control]
    return tuple(sorted(parts)) if sort else tuple(parts)


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
    seen = pd.unique(pd.Series(np.asarray(labels, dtype=object)).astype(str).to_numpy())
    if control is not None:
        if str(control) not in set(seen):
            raise ValueError(
                f"Control label {control!r} not found: control={control!r} does not occur in the "
                f"condition column. Labels seen: {preview(seen)}. Pass control='<label of "
                "unperturbed cells>'."
            )
        return str(control)
    found = [s for s in seen if s.lower() in COMMON_CONTROL_LABELS]
    if len(found) > 1:
        raise ValueError(
            f"Several control labels found ({', '.join(map(repr, sorted(found)))}); pass "
            "control='<label of unperturbed cells>' to choose one."
        )
    if not found:
        raise ValueError(
            "No control cells found. No control label among the common ones "
            f"({', '.join(COMMON_CONTROL_LABELS)}; case-insensitive) occurs in the condition "
            f"column. Labels seen: {preview(seen)}. Pass control='<label of unperturbed cells>'."
        )
    return found[0]


def preview(values, n: int = 20) -> str:
    """``'a', 'b', ... (+k more)``: the first ``n`` of ``values`` (sorted) for error messages."""
    vals = sorted(map(str, values))
    more = f" ... (+{len(vals) - n} more)" if len(vals) > n else ""
    return ", ".join(repr(v) for v in vals[:n]) + more
