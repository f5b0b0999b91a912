"""JSON Schema checks of stored documents (saved models' ``config.json``) with errors that name
the file, the key and the fix.

:func:`dataclass_schema` derives a schema from a configuration dataclass (its fields and type
hints), :func:`check_json` validates a document with :mod:`jsonschema` and raises the first
problem as a readable ``ValueError`` (unknown or missing keys, implausible values) or
``TypeError`` (a value of the wrong JSON type). Integers must be integers (``true`` and ``3.0``
are not), numbers must not be NaN, and tuples count as arrays (``dataclasses.asdict`` output).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean",
               type(None): "null"}
_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "true or false", "null": "null", "array": "a list",
               "object": "a mapping (JSON object)"}


def dataclass_schema(cls: type, limits: Mapping[str, tuple[float, float]] | None = None
                     ) -> dict[str, Any]:
    """JSON Schema of a flat dataclass: one property per field, no other keys.

    Parameters
    ----------
    cls
        A dataclass whose fields are JSON scalars, ``X | None`` or ``tuple[X, ...]``.
    limits
        ``{field: (minimum, maximum)}``: the plausible range of numeric fields.

    Returns
    -------
    A schema dict; fields without a default are required.
    """
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        prop = type_schema(hints[f.name])
        if limits and f.name in limits:
            prop["minimum"], prop["maximum"] = limits[f.name]
        props[f.name] = prop
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


def type_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema of a type hint (``int``, ``str | None``, ``tuple[str, ...]``, ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        subs = [type_schema(a) for a in args]
        if all(list(s) == ["type"] and isinstance(s["type"], str) for s in subs):
            return {"type": [s["type"] for s in subs]}
        return {"anyOf": subs}
    if origin in (tuple, list):
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if tp is Any:
        return {}
    return {"type": _JSON_TYPES[tp]}


@functools.lru_cache(maxsize=1)
def _validator_class():
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({
        "integer": lambda _, x: isinstance(x, numbers.Integral) and not isinstance(x, bool),
        "number": lambda _, x: (isinstance(x, numbers.Real) and not isinstance(x, bool)
                                and not (isinstance(x, float) and math.isnan(x))),
        "array": lambda _, x: isinstance(x, list | tuple),
    })
    return jsonschema.validators.extend(base, type_checker=checker)


def check_json(instance: Any, schema: Mapping[str, Any], where: str, root: str = "") -> None:
    """Validate ``instance`` against ``schema``; raise its first problem readably.

    Parameters
    ----------
    instance
        The parsed JSON document (or the part of it at ``root``).
    schema
        A JSON Schema (draft 2020-12).
    where
        What holds the document (a file path, a function name), first in every message.
    root
        Path of ``instance`` inside the document (``"config"``), used to name keys.

    Raises
    ------
    TypeError
        A value of the wrong JSON type (e.g. a string where an integer is expected).
    ValueError
        Unknown keys (listing the valid ones), missing keys, values out of their plausible range.
    """
    errors = list(_validator_class()(schema).iter_errors(instance))
    if not errors:
        return
    errors.sort(key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    raise _readable(errors[0], where, root, len(errors) - 1)


def _location(root: str, path) -> str:
    out = root
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _readable(err, where: str, root: str, n_more: int) -> Exception:
    loc = _location(root, err.absolute_path)
    at = f"in {loc}" if loc else "at the top level"
    more = f" ({n_more} more problem(s) after this one.)" if n_more else ""
    kind = err.validator
    if kind == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return ValueError(f"{where}: unknown key(s) {extra} {at}; valid keys: {allowed}. Remove "
                          f"them, or upgrade scdit if a newer version wrote this.{more}")
    if kind == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return ValueError(f"{where}: {loc or 'the document'} lacks the required key(s) {missing}; "
                          f"it is incomplete or damaged.{more}")
    if kind == "type":
        want = err.validator_value
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in ([want] if isinstance(want, str)
                                                             else want))
        return TypeError(f"{where}: {loc or 'the document'} must be {words}, got "
                         f"{type(err.instance).__name__} {_short(err.instance)}.{more}")
    if kind in ("minimum", "maximum"):
        lo, hi = err.schema.get("minimum", "-inf"), err.schema.get("maximum", "inf")
        return ValueError(f"{where}: {loc} = {_short(err.instance)} is outside its plausible "
                          f"range [{lo}, {hi}]; the file is damaged or was edited.{more}")
    return ValueError(f"{where}: {loc or 'the document'}: {err.message}.{more}")
