"""docs/evaluation.md says what ``scdit.evaluate`` does: every metric with its definition, every
baseline, the signature, and links that resolve."""

from __future__ import annotations

import re

import scdit
from scdit.evaluate import ALL_BASELINES, BASELINES, DEFINITIONS, LOWER_IS_BETTER, METRICS
from tests.doc_signatures import DOCS, documented_call, signature_problems

TEXT = (DOCS / "evaluation.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return TEXT.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_metric_is_documented_with_the_code_definition():
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", _section("Metrics"), flags=re.M))
    assert list(rows) == list(METRICS)
    for metric, definition in rows.items():
        assert definition.replace("\\|", "|") == DEFINITIONS[metric], metric


def test_lower_is_better_list_matches():
    sentence = _section("Metrics").split("Lower is better for ", 1)[1].split(";", 1)[0]
    assert set(re.findall(r"`(\w+)`", sentence)) == set(LOWER_IS_BETTER)


def test_every_baseline_is_documented():
    section = _section("Baselines")
    items = re.findall(r"^- `(\w+)`", section, flags=re.M)
    assert items == list(ALL_BASELINES)
    defaults = section.split("by default (", 1)[1].split(")", 1)[0]
    assert re.findall(r"`(\w+)`", defaults) == list(BASELINES)


def test_signature_matches_the_code():
    assert signature_problems(documented_call(TEXT, "scdit.evaluate"), scdit.evaluate.evaluate) == []


def test_relative_links_resolve():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", TEXT)
    assert links
    missing = [link for link in links if not (DOCS / link).exists()]
    assert missing == []
    assert "EVALUATION.md" not in TEXT
