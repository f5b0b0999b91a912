"""The tokenizer protocol: declared optional abilities and registration checks."""

from __future__ import annotations

import pytest

from scdit.tokenizers import TOKENIZERS, GeneTokenizer, PCATokenizer, ScVITokenizer, register


def test_register_names_the_missing_protocol_members():
    with pytest.raises(TypeError, match=r"lacks .*'decode'.*BaseTokenizer"):
        @register("incomplete")
        class Incomplete:  # noqa: F841 - a class that forgot most of the protocol
            kind = "incomplete"

            def encode(self, x):
                return x
    assert "incomplete" not in TOKENIZERS


def test_built_in_tokenizers_declare_their_abilities():
    value, rank = GeneTokenizer(), GeneTokenizer(encoding="rank")
    assert value.clips_output and value.expression_coordinates and not value.can_decode_counts
    assert not rank.clips_output and not rank.expression_coordinates
    pca = PCATokenizer()
    assert not pca.clips_output and not pca.expression_coordinates and not pca.can_decode_counts
    assert ScVITokenizer.can_decode_counts and ScVITokenizer.requires_counts
