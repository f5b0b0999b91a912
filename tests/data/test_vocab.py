"""Condition and covariate vocabularies: the combination parser, order-free combos, featured atoms, doses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scdit.data import ConditionVocab, CovariateVocab, parse_doses, split_label

LABELS = ["ctrl", "A", "B", "C", "A+B", "ctrl", "A"]


def test_condition_vocab_atoms_and_order_free_combos():
    vocab = ConditionVocab.build(LABELS, "ctrl")
    assert vocab.atoms == ("A", "B", "C")
    assert set(vocab.conditions) == {"ctrl", "A", "B", "C", "A+B"}
    enc = vocab.encode(["A+B", "B+A", "ctrl", "A", "ctrl+A"])
    assert enc.shape == (5, 2)
    assert np.array_equal(enc[0], enc[1])
    assert sorted(enc[0].tolist()) == [1, 2]  # atom rows start at 1
    assert np.array_equal(enc[2], [0, 0])  # control: no atoms
    assert np.array_equal(enc[3], [1, 0]) and np.array_equal(enc[4], [1, 0])
    with pytest.raises(ValueError, match="Malformed condition label ' B \\+ A '"):
        vocab.encode([" B + A "])  # space-padded labels are errors, not silently repaired
    assert vocab.encode(["A"], max_members=3).shape == (1, 3)
    # B+C was never seen as a condition but its atoms were: encodable
    assert sorted(vocab.encode(["C+B"])[0].tolist()) == [2, 3]


def test_split_label_and_separator():
    assert split_label("B+A", "ctrl") == ("A", "B")
    assert split_label("ctrl", "ctrl") == ()
    assert split_label("A+ctrl", "ctrl") == ("A",)
    vocab = ConditionVocab.build(["NT", "x|y", "y"], "NT", separator="|")
    assert vocab.atoms == ("x", "y")
    assert np.array_equal(vocab.encode(["y|x"]), vocab.encode(["x|y"]))
    # with the '|' separator "A+B" is one atom
    assert ConditionVocab.build(["NT", "A+B"], "NT", separator="|").atoms == ("A+B",)


def test_condition_vocab_unknown_and_round_trip():
    vocab = ConditionVocab.build(LABELS, "ctrl")
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['Z'\]"):
        vocab.encode(["A", "Z+A"])
    assert vocab.unknown_atoms(["Z+A", "Y"]) == ["Y", "Z"]
    again = ConditionVocab.from_dict(vocab.to_dict())
    assert again == vocab


def test_covariate_vocab():
    obs = pd.DataFrame({"cell_type": pd.Categorical(["T", "B", "T"]), "batch": [1, 2, 1]})
    covs = CovariateVocab.build(obs, ["cell_type", "batch"])
    assert covs.keys == ("cell_type", "batch") and covs.sizes() == [3, 3]
    codes = covs.encode(obs)
    assert codes.tolist() == [[2, 1], [1, 2], [2, 1]]  # sorted categories, 0 reserved
    with pytest.raises(KeyError, match=r"Unknown value\(s\) \['NK'\] for covariate 'cell_type'"):
        covs.encode(pd.DataFrame({"cell_type": ["NK"], "batch": ["1"]}))
    with pytest.raises(KeyError, match="Covariate 'batch' is required"):
        covs.encode(pd.DataFrame({"cell_type": ["T"]}))
    assert CovariateVocab.from_dict(covs.to_dict()) == covs


def test_vocab_featured_atoms():
    v = ConditionVocab.build(["ctrl", "A", "B"], "ctrl").with_featured(["B", "Z", "ctrl"])
    assert v.featured == ("Z",)
    assert v.encode(["Z"]).tolist() == [[3]]
    assert ConditionVocab.from_dict(v.to_dict()) == v
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['Q'\].*feature table"):
        v.encode(["Q"])


def test_parse_doses_aligns_with_sorted_members():
    v = ConditionVocab.build(["ctrl", "B+A", "A"], "ctrl")
    d = parse_doses(["B+A", "A", "ctrl"], ["1+2", 5, 7], v, 2)
    # encode sorts members (A, B): "B+A" with "1+2" → A=2, B=1
    assert d.tolist() == [[2.0, 1.0], [5.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="non-numeric"):
        parse_doses(["A"], ["high"], v, 1)
    with pytest.raises(ValueError, match="does not fit"):
        parse_doses(["B+A"], ["1+2+3"], v, 2)


def test_encode_rows_follow_the_labels():
    """Each row holds its own label's atoms (rows of repeated labels are built once)."""
    vocab = ConditionVocab.build(["ctrl", "A", "B", "A+B"], "ctrl")
    idx = vocab.atom_index
    codes = vocab.encode(["B", "ctrl", "B+A", "A", "B"])
    assert codes.tolist() == [[idx["B"], 0], [0, 0], [idx["A"], idx["B"]], [idx["A"], 0],
                              [idx["B"], 0]]
    assert vocab.encode(["A"], max_members=3).tolist() == [[idx["A"], 0, 0]]
    assert vocab.encode([]).shape == (0, 1)
