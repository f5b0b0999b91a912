"""docs/user_guide.md's signatures of ``fit``, ``predict`` and the configs match the code, and its
relative links resolve."""

from __future__ import annotations

import re

import pytest

import scdit
from tests.doc_signatures import DOCS, documented_call, signature_problems

TEXT = (DOCS / "user_guide.md").read_text(encoding="utf-8")

CALLS = [
    ("model.predict", scdit.ScDiT.predict),
    ("scdit.fit", scdit.fit),
    ("sampling=scdit.SamplingConfig", scdit.SamplingConfig),
    ("scdit.EffectConfig(mode=", scdit.EffectConfig),
    ("train=scdit.TrainConfig", scdit.TrainConfig),
]


@pytest.mark.parametrize(("call", "func"), CALLS, ids=[c for c, _ in CALLS])
def test_documented_signature_matches_the_code(call, func):
    if call.endswith("="):  # the call is written with its first argument
        name, first = call.rsplit("(", 1)
        args = first + documented_call(TEXT[TEXT.index(call):], name)[len(first):]
    else:
        args = documented_call(TEXT, call)
    assert signature_problems(args, func) == []


def test_signature_check_catches_a_wrong_default():
    assert signature_problems("perturbations, n_cells=5, ...", scdit.ScDiT.predict)


def test_relative_links_resolve():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", TEXT)
    assert links
    missing = [link for link in links if not (DOCS / link).exists()]
    assert missing == []
