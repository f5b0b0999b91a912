"""The documentation covers the public API: every name in a public ``__all__`` is on the API pages.

The API pages (``docs/api/*.md``) list names in ``autosummary`` blocks under a
``currentmodule``; Sphinx (``make docs``) turns them into pages. These tests read the pages as
text, so they run without Sphinx.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import scdit

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
README_LIMIT = 8 * 1024  # bytes (issue 20)
SCALARS = (int, float, str, bytes, bool, type(None))

_MODULE = re.compile(r"^\s*\.\.\s+(?:current)?module::\s*(\S+)\s*$")
_FENCED_MODULE = re.compile(r"^```\{(?:currentmodule|automodule|module)\}\s+(\S+)\s*$")
_AUTOMODULE = re.compile(r"^\s*\.\.\s+automodule::\s*(\S+)\s*$")
_AUTOSUMMARY = re.compile(r"^(\s*)\.\.\s+autosummary::")


def documented_names(pages: list[Path]) -> tuple[set[str], set[str]]:
    """Qualified names listed in autosummary blocks, and the modules the pages document."""
    names: set[str] = set()
    modules: set[str] = set()
    for page in pages:
        current = None
        in_summary = None  # indentation of the autosummary directive while inside one
        for line in page.read_text(encoding="utf-8").splitlines():
            if in_summary is not None:
                stripped = line.strip()
                if stripped.startswith("```") or (
                    stripped and len(line) - len(line.lstrip()) <= in_summary
                ):
                    in_summary = None
                elif stripped and not stripped.startswith(":"):
                    names.add(f"{current}.{stripped.lstrip('~')}")
                    continue
                else:
                    continue
            match = _MODULE.match(line) or _FENCED_MODULE.match(line) or _AUTOMODULE.match(line)
            if match:
                current = match.group(1)
                modules.add(current)
                continue
            match = _AUTOSUMMARY.match(line)
            if match:
                assert current, f"{page.name}: an autosummary block before any currentmodule"
                in_summary = len(match.group(1))
    return names, modules


def resolve(qualified: str):
    """The object at a dotted name under ``scdit`` (through attributes, as users reach it)."""
    parts = qualified.split(".")
    assert parts[0] == "scdit", qualified
    obj = scdit
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def public_modules() -> dict[str, ModuleType]:
    """Every module of scdit with no private part in its name that declares ``__all__``."""
    out = {"scdit": scdit}
    for info in pkgutil.walk_packages(scdit.__path__, prefix="scdit."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            out[info.name] = module
    return out


def _documented(pages: list[Path]) -> tuple[set[str], set[int]]:
    """Documented qualified names (under real module names too) and ids of non-scalar objects."""
    names, modules = documented_names(pages)
    objects = {}
    for name in names | modules:
        objects[name] = resolve(name)
    qualified = set(names)
    for name in objects:  # scdit.pl.X is also scdit.plotting.X
        owner, _, attr = name.rpartition(".")
        if owner in objects and isinstance(objects[owner], ModuleType):
            qualified.add(f"{objects[owner].__name__}.{attr}")
    ids = {id(obj) for obj in objects.values() if not isinstance(obj, SCALARS)}
    return qualified, ids


def test_api_pages_parse():
    names, modules = documented_names(API_PAGES)
    assert {"scdit.fit", "scdit.ScDiT", "scdit.evaluate.evaluate", "scdit.pl.delta_scatter"} <= names
    assert {"scdit", "scdit.datasets", "scdit.splits", "scdit.evaluate", "scdit.pl"} <= modules


def test_every_documented_name_exists():
    names, modules = documented_names(API_PAGES)
    missing = []
    for name in sorted(names | modules):
        try:
            resolve(name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert not missing, f"docs/api/*.md list names that scdit does not have: {missing}"


def undocumented(pages: list[Path]) -> list[str]:
    """Names of public ``__all__`` lists that ``pages`` document neither by name nor as the same
    object under another name (``scdit.splits.Split`` covers ``scdit.data.Split``)."""
    qualified, ids = _documented(pages)
    missing = []
    for module_name, module in public_modules().items():
        for name in module.__all__:
            if name.startswith("__"):
                continue
            obj = getattr(module, name)
            same_object = not isinstance(obj, SCALARS) and id(obj) in ids
            if f"{module_name}.{name}" not in qualified and not same_object:
                missing.append(f"{module_name}.{name}")
    return missing


def test_every_public_name_is_documented():
    missing = undocumented(API_PAGES)
    assert not missing, (
        f"public names missing from the API reference: {missing}; add each to an autosummary "
        "block of a docs/api/*.md page (under the currentmodule it belongs to)"
    )


def test_checker_reports_a_missing_name(tmp_path):
    page = tmp_path / "api.md"
    page.write_text(
        "```{eval-rst}\n.. currentmodule:: scdit\n```\n\n```{eval-rst}\n.. autosummary::\n"
        "   :toctree: generated/\n\n   fit\n   ~ScDiT\n```\n\nload is described here.\n",
        encoding="utf-8",
    )
    names, modules = documented_names([page])
    assert names == {"scdit.fit", "scdit.ScDiT"}
    assert modules == {"scdit"}
    missing = undocumented([page])
    assert "scdit.load" in missing and "scdit.api.load" in missing
    assert "scdit.fit" not in missing and "scdit.api.fit" not in missing  # the same object
    assert "scdit.model.ScDiT" not in missing


@pytest.mark.parametrize("page", ["index.md", "concepts/index.md", "tutorials/index.md", "api/index.md"])
def test_site_pages_exist(page):
    assert (ROOT / "docs" / page).is_file(), f"docs/{page} is missing (the site's toctree names it)"


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it within {README_LIMIT}"
