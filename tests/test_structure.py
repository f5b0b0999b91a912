"""The package's shape: one-way imports, public surfaces only, size limits (docs/architecture.md)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import scdit

ROOT = Path(scdit.__file__).parent
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Modules of scdit that ``name`` imports at module level or in functions."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("scdit"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("scdit"))
    return out


def test_no_private_module_of_another_package_is_imported():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        own = name.split(".")[1] if name.count(".") else ""
        for mod in _imports(name, path):
            parts = mod.split(".")
            if mod not in modules or len(parts) < 3:
                continue
            if parts[1] != own and any(p.startswith("_") for p in parts[2:]):
                bad.append(f"{name} imports {mod}")
    assert not bad, bad


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {n: {m for m in _imports(n, p) if m in modules and m != n}
             for n, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph[n]:
            if m.startswith(n + "."):  # a package importing its own modules is not a cycle
                continue
            if state.get(m) == 1 and not n.startswith(m + "."):
                cycles.append(stack[stack.index(m):] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles[:5]


def test_module_and_class_sizes():
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_CLASS_LINES:
                    too_long.append(f"class {name}.{node.name}: {n} lines")
    assert not too_long, too_long


def test_entry_point_parameter_counts():
    assert len(inspect.signature(scdit.fit).parameters) <= 20
    assert len(inspect.signature(scdit.ScDiT.predict).parameters) - 1 <= 12  # self
    sample = inspect.signature(scdit.ScDiT.sample).parameters
    assert not [p for p in sample if p.startswith("_")]


def test_configs_are_importable_from_the_top_package():
    for name in ("DataConfig", "TokenizerConfig", "ConditionConfig", "DiTConfig", "FlowConfig",
                 "TrainConfig", "SamplingConfig", "ScDiTConfig", "EffectConfig"):
        assert name in scdit.__all__ and getattr(scdit, name).__name__ == name
