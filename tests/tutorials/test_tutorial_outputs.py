"""The tutorials as stored: executed, with a figure, normalised cell ids, no blanket warning
filter, and an honest reading at the end (a Markdown cell after the last code cell)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "tutorials").glob("*.ipynb"))
#: A filter that silences every warning (no category, message or module given).
BLANKET = re.compile(r"(filterwarnings|simplefilter)\(\s*[\"']ignore[\"']\s*\)")


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. nbformat's MissingIDFieldWarning
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    return nb


def test_the_five_tutorials_are_there():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_is_stored_executed_with_a_figure(path):
    nb = _read(path)
    assert all(c.get("id") for c in nb.cells)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no stored figure"
    assert not [c.source for c in code if BLANKET.search(c.source)], "all warnings silenced"
    assert nb.cells[-1].cell_type == "markdown", "no reading after the last code cell"
    intro = " ".join(nb.cells[0].source.split())
    assert "stored in this notebook are from the" in intro, "the intro does not name the mode"
