"""Tests for scdit.splits: split functions, the Split container and the leakage check."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scdit.splits import (
    LeakageError,
    Split,
    check_leakage,
    random_cells,
    split_combinations,
    split_covariate_context,
    split_dose,
    split_unseen_perturbations,
)

DATA = Path(__file__).resolve().parents[2] / "scdit" / "datasets" / "_data"
SINGLES = ["G1", "G2", "G3", "G4", "G5", "G6"]
DOUBLES = ["G1+G2", "G1+G3", "G2+G3", "G4+G5", "G5+G6", "G1+G7"]


def make_adata(conditions=None, control="ctrl", n=6, seed=0) -> ad.AnnData:
    """Every condition x cell type (A, B) with ``n`` cells; G7 exists only inside a double."""
    conditions = conditions or [control, *SINGLES, *DOUBLES]
    rows = [(c, ct) for c in conditions for ct in ("A", "B") for _ in range(n)]
    obs = pd.DataFrame(rows, columns=["condition", "cell_type"])
    obs.index = [f"cell{i}" for i in range(len(obs))]
    obs["dose"] = np.where(np.arange(len(obs)) % 2 == 0, 0.1, 1.0)
    x = np.random.default_rng(seed).poisson(1.0, (len(obs), 5)).astype(np.float32)
    return ad.AnnData(x, obs=obs)


def conds(adata, names) -> set[str]:
    return set(adata.obs.loc[list(names), "condition"])


def trained_seen_count(adata, split, combo) -> int:
    train = conds(adata, split.train)
    return sum(g in train for g in combo.split("+"))


@pytest.fixture
def adata():
    return make_adata()


def test_unseen_perturbations_random_is_deterministic(adata):
    a = split_unseen_perturbations(adata, "condition", fraction=0.25, seed=3)
    b = split_unseen_perturbations(adata, "condition", fraction=0.25, seed=3)
    assert a == b
    assert a.kind == "unseen_perturbations" and len(a.held_out_conditions) == 3
    assert conds(adata, a.test) == set(a.held_out_conditions)
    assert not conds(adata, a.train) & set(a.held_out_conditions)
    assert "ctrl" in conds(adata, a.train)
    assert len(a.train) + len(a.test) == adata.n_obs
    others = {tuple(split_unseen_perturbations(adata, "condition", seed=s).held_out_conditions)
              for s in range(5)}
    assert len(others) > 1


def test_unseen_perturbations_chosen_and_errors(adata):
    s = split_unseen_perturbations(adata, "condition", held_out=["G1", "G4+G5"])
    assert s.held_out_conditions == ["G1", "G4+G5"]
    assert len(s.test) == 2 * 2 * 6
    with pytest.raises(ValueError, match="NOPE"):
        split_unseen_perturbations(adata, "condition", held_out=["G1", "NOPE"])
    with pytest.raises(ValueError, match="control"):
        split_unseen_perturbations(adata, "condition", held_out=["ctrl"])


def test_control_detection():
    for label in ("Non-Targeting", "DMSO", "vehicle", "NT", "control"):
        s = split_unseen_perturbations(make_adata(control=label), "condition", held_out="G1")
        assert s.params["control"] == label
    no_ctrl = make_adata(conditions=["G1", "G2", "G3"])
    with pytest.raises(ValueError, match="'G1'"):
        split_unseen_perturbations(no_ctrl, "condition")
    s = split_unseen_perturbations(no_ctrl, "condition", control="G3", held_out=["G1"])
    assert "G3" in conds(no_ctrl, s.train)


@pytest.mark.parametrize("seen", [2, 1, 0])
def test_combinations_seen_counts(adata, seen):
    s = split_combinations(adata, "condition", seen=seen, seed=1)
    counts = s.params["seen_counts"]
    assert counts and set(counts.values()) == {seen}
    for combo, n in counts.items():
        assert trained_seen_count(adata, s, combo) == n
    assert set(counts) <= conds(adata, s.test)
    train = conds(adata, s.train)
    assert "ctrl" in train
    for gene in s.params["held_out_genes"]:
        assert not any(gene in c.split("+") for c in train)
    if seen == 2:
        assert s.params["held_out_genes"] == [] and set(SINGLES) <= train
    assert split_combinations(adata, "condition", seen=seen, seed=1) == s


def test_combinations_tuple_fraction_and_ahlmann_eltze(adata):
    s = split_combinations(adata, "condition", seen=(1, 2), fraction=0.5, seed=0)
    assert set(s.params["seen_counts"].values()) <= {1, 2}
    ae = split_combinations(adata, "condition", mode="ahlmann-eltze", seed=0)
    train = conds(adata, ae.train)
    assert set(SINGLES) <= train
    assert len(set(DOUBLES) & train) == 3 and set(ae.params["seen_counts"]) == set(DOUBLES) - train


def test_combinations_chosen(adata):
    s = split_combinations(adata, "condition", seen=1, held_out=["G4", "G4+G5"])
    assert s.params["seen_counts"] == {"G4+G5": 1}
    assert "G4" in s.held_out_conditions and "G4" not in conds(adata, s.train)
    with pytest.raises(ValueError, match="seen"):
        split_combinations(adata, "condition", seen=2, held_out=["G4", "G4+G5"])
    with pytest.raises(ValueError, match="G9"):
        split_combinations(adata, "condition", held_out=["G9+G1"])


def test_combinations_errors():
    no_combo = make_adata(conditions=["ctrl", "G1", "G2"])
    with pytest.raises(ValueError, match="No combinations"):
        split_combinations(no_combo, "condition")
    unmeasured = make_adata(conditions=["ctrl", "G1", "G8+G9", "G7+G9"])
    with pytest.raises(ValueError, match="No combination qualifies"):
        split_combinations(unmeasured, "condition", seen=2)


def test_covariate_context(adata):
    s = split_covariate_context(adata, "condition", "cell_type", context="B")
    test = adata[list(s.test)].obs
    assert set(test["cell_type"]) == {"B"} and "ctrl" not in set(test["condition"])
    source = adata[s.params["source_obs_names"]].obs
    assert set(source["condition"]) == {"ctrl"} and set(source["cell_type"]) == {"B"}
    assert set(s.params["source_obs_names"]) <= set(s.train)
    assert s.held_out_context == {"cell_type": "B"}
    sub = split_covariate_context(adata, "condition", "cell_type", context="A",
                                  conditions=["G1", "G1+G2"])
    assert len(sub.test) == 12 and "G1" in conds(adata, sub.train)
    with pytest.raises(ValueError, match="available"):
        split_covariate_context(adata, "condition", "cell_type", context="Z")
    with pytest.raises(KeyError):
        split_covariate_context(adata, "condition", "donor", context="A")


def test_dose(adata):
    s = split_dose(adata, "condition", "dose", held_out_doses=[1.0], conditions=["G1", "G2"])
    test = adata[list(s.test)].obs
    assert set(test["dose"]) == {1.0} and set(test["condition"]) == {"G1", "G2"}
    assert {"G1", "G2"} <= conds(adata, s.train)
    with pytest.raises(ValueError, match="5.0"):
        split_dose(adata, "condition", "dose", held_out_doses=5.0)


def test_random_cells_and_val(adata):
    s = random_cells(adata, "condition", fraction=0.5, stratify_key="cell_type", seed=2,
                     val_fraction=0.2)
    assert s == random_cells(adata, "condition", fraction=0.5, stratify_key="cell_type",
                             seed=2, val_fraction=0.2)
    obs = adata.obs
    per = obs.loc[list(s.test)].groupby(["condition", "cell_type"], observed=True).size()
    assert (per == 3).all() and len(per) == 2 * (len(SINGLES) + len(DOUBLES))
    assert "ctrl" not in conds(adata, s.test)
    assert conds(adata, s.val) == conds(adata, s.train)
    assert not set(s.val) & (set(s.train) | set(s.test))
    u = split_unseen_perturbations(adata, "condition", held_out=["G2"], val_fraction=0.25)
    assert len(u.val) > 0 and "G2" not in conds(adata, u.val)


def test_json_roundtrip_masks_subset(adata, tmp_path):
    s = split_combinations(adata, "condition", seen=1, val_fraction=0.2)
    path = tmp_path / "split.json"
    s.to_json(path)
    back = Split.from_json(path)
    assert back == s and back.to_dict() == s.to_dict()
    assert back.params["seen_counts"] == s.params["seen_counts"]
    np.testing.assert_array_equal(back.val, s.val)
    c = split_covariate_context(adata, "condition", "cell_type", context="A")
    c.to_json(path)
    assert Split.from_json(path) == c
    train_mask, test_mask = s.masks(adata)
    assert train_mask.sum() == len(s.train) and not (train_mask & test_mask).any()
    a_train, a_test = s.subset(adata)
    assert list(a_test.obs_names) == [n for n in adata.obs_names if n in set(s.test)]
    a_train.obs["x"] = 1
    assert "x" not in adata.obs
    with pytest.raises(ValueError, match="not in adata"):
        s.masks(adata[:10])
    assert "combinations" in s.summary() and "seen-1" in s.summary()


def test_leakage_detected(adata):
    names = np.asarray(adata.obs_names)
    labels = adata.obs["condition"].to_numpy()
    with pytest.raises(LeakageError, match="both"):
        check_leakage(Split(train=names[:50], test=names[40:]), adata, "condition")
    leaky = Split(train=names[labels != "G2"], test=names[labels == "G2"],
                  held_out_conditions=["G1"])
    with pytest.raises(LeakageError, match="G1"):
        check_leakage(leaky, adata, "condition")
    ctx = Split(train=names, test=[], held_out_conditions=["G1"],
                held_out_context={"cell_type": "B"})
    with pytest.raises(LeakageError, match="cell_type"):
        check_leakage(ctx, adata, "condition")
    good = split_combinations(adata, "condition", seen=2)
    d = good.to_dict()
    d["params"]["seen_counts"] = dict.fromkeys(d["params"]["seen_counts"], 1)
    with pytest.raises(LeakageError, match="Seen counts"):
        check_leakage(Split.from_dict(d), adata, "condition")
    d = split_combinations(adata, "condition", seen=1, seed=0).to_dict()
    gene = d["params"]["held_out_genes"][0]
    d["train"] += [n for n, c in zip(names, labels, strict=True) if c == gene]
    d["test"] = [n for n in d["test"] if n not in set(d["train"])]
    d["held_out_conditions"] = []
    with pytest.raises(LeakageError):
        check_leakage(Split.from_dict(d), adata, "condition")
    assert issubclass(LeakageError, ValueError)


def test_bundled_norman_k562():
    full = ad.read_h5ad(DATA / "norman19_mcfaline23_devel.h5ad")
    k562 = full[full.obs["cell_type"] == "k562"].copy()
    s = split_combinations(k562, "condition", seen=2)
    doubles = [c for c in s.held_out_conditions if "+" in c]
    assert len(doubles) >= 5 and set(s.params["seen_counts"].values()) == {2}
    check_leakage(s, k562, "condition")
    assert s.params["control"] == "control"
    for seen in (1, 0):
        s = split_combinations(k562, "condition", seen=seen, seed=4)
        assert set(s.params["seen_counts"].values()) == {seen}
    ae = split_combinations(k562, "condition", mode="ahlmann-eltze")
    assert sum("+" in c for c in ae.held_out_conditions) == 7
    c = split_covariate_context(full, "condition", "cell_type", context="A172", val_fraction=0.1)
    assert len(c.params["source_obs_names"]) == 100
