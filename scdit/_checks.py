"""Checks of configuration values shared by the config dataclasses."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_field(config: Any, name: str, *, integer: bool = False, low: float | None = None,
                high: float | None = None, low_open: bool = False, high_open: bool = False,
                none_ok: bool = False, hint: str = "") -> None:
    """Raise a clear error unless ``config.<name>`` is a finite number in the given range.

    Zero is never read as "default": a field whose default is automatic takes ``None`` for it.

    Parameters
    ----------
    config
        A config dataclass instance (its class name is used in messages).
    name
        The field to check.
    integer
        Require an integer (``bool`` and integer-valued floats are refused).
    low, high
        Bounds (inclusive unless ``low_open`` / ``high_open``).
    none_ok
        Whether ``None`` is allowed.
    hint
        Appended to the message (e.g. what ``None`` means).

    Raises
    ------
    TypeError
        For a value of the wrong type.
    ValueError
        For NaN, infinite or out-of-range values.
    """
    value = getattr(config, name)
    if value is None and none_ok:
        return
    what = "an integer" if integer else "a number"
    rng = [f"{'>' if low_open else '≥'} {low:g}" if low is not None else "",
           f"{'<' if high_open else '≤'} {high:g}" if high is not None else ""]
    want = f"{what} {' and '.join(r for r in rng if r)}".strip() + (" or None" if none_ok else "")
    msg = f"{type(config).__name__}.{name} must be {want}, got {value!r}"
    msg += f" ({hint})." if hint else "."
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(msg)
    if not np.isfinite(float(value)):
        raise ValueError(msg)
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(msg)
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(msg)
