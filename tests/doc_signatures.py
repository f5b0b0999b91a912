"""Check call signatures written in the Markdown docs against the code (``inspect.signature``).

A documented call such as ``model.predict(perturbations, n_cells=None, *, seed=None)`` is read
as a function definition; a trailing ``...`` marks a partial list (only the names written are
checked, each with its kind and default).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def documented_call(text: str, call: str) -> str:
    """The argument text of the first ``call(...)`` in ``text`` (parentheses balanced)."""
    start = text.index(call + "(") + len(call) + 1
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise ValueError(f"unbalanced parentheses after {call!r}")


def _documented_params(args: str) -> tuple[list[tuple[str, object, object]], bool]:
    """``[(name, kind, default or empty)]`` of a documented argument list, and whether partial."""
    args = " ".join(args.replace("`", "").split())
    partial = args.endswith("...")
    if partial:
        args = args[: -len("...")].rstrip().rstrip(",")
    fn = ast.parse(f"def f({args}): pass").body[0].args
    empty = inspect.Parameter.empty
    out = []
    positional = fn.posonlyargs + fn.args
    pos_defaults = [empty] * (len(positional) - len(fn.defaults)) + list(fn.defaults)
    for a, d in zip(positional, pos_defaults, strict=True):
        out.append((a.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, d))
    for a, d in zip(fn.kwonlyargs, fn.kw_defaults, strict=True):
        out.append((a.arg, inspect.Parameter.KEYWORD_ONLY, empty if d is None else d))
    return [(n, k, d if d is empty else ast.literal_eval(d)) for n, k, d in out], partial


def signature_problems(args: str, func) -> list[str]:
    """Differences between a documented argument list and ``func``'s signature (empty if none)."""
    documented, partial = _documented_params(args)
    actual = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    by_name = {p.name: p for p in actual}
    problems = []
    if not partial and [n for n, _, _ in documented] != [p.name for p in actual]:
        problems.append(f"parameters {[n for n, _, _ in documented]} documented, "
                        f"{[p.name for p in actual]} in the code")
    for name, kind, default in documented:
        p = by_name.get(name)
        if p is None:
            problems.append(f"{name!r} is documented but not a parameter")
            continue
        if p.kind != kind:
            problems.append(f"{name!r} is documented as {kind.description}, is {p.kind.description}")
        same = default == p.default or repr(default) == repr(p.default)
        if not same:
            problems.append(f"{name!r}: default {default!r} documented, {p.default!r} in the code")
    return problems
