"""Feature reliability: the leave-one-out calibration of feature-based effect predictions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scdit.conditions import MIN_FEATURED, PERMUTATIONS, Z_HIGH, Z_LOW, feature_reliability


def _screen(effects: dict[str, np.ndarray], n_genes: int, cells: int = 4, seed: int = 0):
    """log1p cells whose group means are exactly control 1 + each perturbation's effect."""
    rng = np.random.default_rng(seed)
    labels, rows = [], []
    for name, eff in {"ctrl": np.zeros(n_genes), **effects}.items():
        noise = rng.normal(0, 0.3, (cells, n_genes))
        rows.append(1.0 + eff + noise - noise.mean(0))  # exact group mean
        labels += [name] * cells
    return np.vstack(rows), labels


def _clusters(n_per: int, k: int, n_genes: int, seed: int, informative: bool):
    """``k`` clusters of perturbations with one effect each; features say the cluster when
    ``informative``, else they are drawn independently of it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, 6))
    programme = rng.normal(0, 1, (k, n_genes))
    names, feats, effects = [], [], {}
    for c in range(k):
        for i in range(n_per):
            name = f"P{c}{i}"
            names.append(name)
            f = centres[c] if informative else rng.normal(0, 3, 6)
            feats.append(f + rng.normal(0, 0.3, 6))
            effects[name] = programme[c] + rng.normal(0, 0.1, n_genes)
    return names, np.array(feats), effects


def test_features_that_place_effects_get_scale_one():
    names, feats, effects = _clusters(4, 3, 40, seed=0, informative=True)
    X, labels = _screen(effects, 40)
    out = feature_reliability(X, [f"g{j}" for j in range(40)], labels, "ctrl", feats, names)
    assert out["n"] == 12
    assert out["scale"] > 0.9 and out["correlation"] > 0.9 and out["slope"] > 0.9


def test_features_unrelated_to_effects_get_a_small_scale():  # no evidence of a correlation
    scales = []
    for seed in range(5):
        names, feats, effects = _clusters(4, 3, 40, seed=seed, informative=False)
        X, labels = _screen(effects, 40, seed=seed)
        scales.append(feature_reliability(X, [f"g{j}" for j in range(40)], labels, "ctrl",
                                          feats, names)["scale"])
    assert np.mean(scales) < 0.3


def test_hand_computed_two_clusters():
    # two clusters of three perturbations with identical features and effects a / b: every
    # nearest distance is 0, so the bandwidth falls back to the median positive distance (the
    # between-cluster one, D): a perturbation's other-cluster neighbours weigh e^-1
    a, b = np.array([1.0, 0.0, 2.0]), np.array([0.0, -1.0, 0.5])
    names = ["A1", "A2", "A3", "B1", "B2", "B3"]
    feats = np.array([[3.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)  # D = (9 + 1) / 2
    X, labels = _screen({n: a if n[0] == "A" else b for n in names}, 3)
    out = feature_reliability(X, ["x", "y", "z"], labels, "ctrl", feats, names)
    w = np.exp(-1.0)
    centre = (2 * a + 3 * b) / 5  # the mean effect of the five others
    p = (2 * a + 3 * w * b) / (2 + 3 * w) - centre
    y = a - centre  # by symmetry the B rows give the same ratio with a and b swapped
    pb = (2 * b + 3 * w * a) / (2 + 3 * w) - (2 * b + 3 * a) / 5
    yb = b - (2 * b + 3 * a) / 5
    slope = 3 * (p @ y + pb @ yb) / (3 * (p @ p + pb @ pb))
    rho = 3 * (p @ y + pb @ yb) / np.sqrt(3 * (p @ p + pb @ pb) * 3 * (y @ y + yb @ yb))
    assert out["slope"] == pytest.approx(slope, rel=1e-9)
    assert out["correlation"] == pytest.approx(rho, rel=1e-9)
    assert out["bandwidth"] == pytest.approx(5.0)


def test_target_genes_left_out_and_scale_invariance():
    names, feats, effects = _clusters(3, 3, 30, seed=1, informative=True)
    genes = [f"g{j}" for j in range(30)]
    genes[:3] = names[:3]  # three perturbations are measured genes
    X, labels = _screen(effects, 30)
    base = feature_reliability(X, genes, labels, "ctrl", feats, names)
    on_target = X.copy()
    for j, name in enumerate(names[:3]):
        on_target[np.asarray(labels) == name, j] -= 5.0  # a huge knock-down of its own gene
    assert feature_reliability(on_target, genes, labels, "ctrl", feats, names)["slope"] == \
        pytest.approx(base["slope"], rel=1e-9)
    scaled = 1.0 + 3.0 * (X - 1.0)  # every effect three times larger
    assert feature_reliability(sp.csr_matrix(scaled), genes, labels, "ctrl", feats,
                               names)["slope"] == pytest.approx(base["slope"], rel=1e-6)


def test_too_few_featured_perturbations_give_zero():
    names, feats, effects = _clusters(4, 3, 20, seed=0, informative=True)
    X, labels = _screen(effects, 20)
    table = feats.copy()
    table[MIN_FEATURED - 1:] = 0.0  # zero rows: no features
    out = feature_reliability(X, [f"g{j}" for j in range(20)], labels, "ctrl", table, names)
    assert out == {"scale": 0.0, "n": MIN_FEATURED - 1}
    # combinations are not singles; the control label is never a perturbation
    labels2 = [lab if lab != names[0] else f"{names[0]}+{names[1]}" for lab in labels]
    out2 = feature_reliability(X, [f"g{j}" for j in range(20)], labels2, "ctrl", feats, names)
    assert out2["n"] == len(names) - 1


def test_singles_written_with_the_control_count_and_unfeatured_ones_do_not_centre():
    names, feats, effects = _clusters(4, 3, 30, seed=2, informative=True)
    genes = [f"g{j}" for j in range(30)]
    X, labels = _screen(effects, 30)
    base = feature_reliability(X, genes, labels, "ctrl", feats, names)
    gears = [lab if lab == "ctrl" else f"{lab}+ctrl" for lab in labels]  # GEARS-style singles
    assert feature_reliability(X, genes, gears, "ctrl", feats, names) == base
    # singles without features (zero rows) change neither the predictions nor their centre
    rng = np.random.default_rng(3)
    extra = {f"U{i}": rng.normal(0, 2, 30) for i in range(4)}
    X2, labels2 = _screen({**effects, **extra}, 30)
    table = np.vstack([feats, np.zeros((4, feats.shape[1]))])
    out = feature_reliability(X2, genes, labels2, "ctrl", table, names + list(extra))
    assert out["n"] == base["n"] and out["slope"] == pytest.approx(base["slope"], rel=1e-9)


def test_scale_is_the_evidence_against_permuted_features():
    # noisy features and effects: z against the permutation null, the scale rising linearly
    # from 0 at z = Z_LOW to 1 at Z_HIGH
    seen = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        centres, programme = rng.normal(0, 1, (3, 6)), rng.normal(0, 1, (3, 30))
        names, feats, effects = [], [], {}
        for c in range(3):
            for i in range(3):
                names.append(f"P{c}{i}")
                feats.append(centres[c] + rng.normal(0, 1.0, 6))
                effects[f"P{c}{i}"] = programme[c] + rng.normal(0, 1.0, 30)
        X, labels = _screen(effects, 30, seed=seed)
        out = feature_reliability(X, [f"g{j}" for j in range(30)], labels, "ctrl",
                                  np.array(feats), names)
        assert out["permutations"] == PERMUTATIONS and out["null_sd"] > 0
        z = (out["correlation"] - out["null_mean"]) / out["null_sd"]
        assert out["z"] == pytest.approx(z)
        want = min(1.0, max(0.0, (z - Z_LOW) / (Z_HIGH - Z_LOW)))
        assert out["scale"] == pytest.approx(want)
        seen.add("zero" if want == 0 else "one" if want == 1 else "between")
    assert seen == {"zero", "one", "between"}  # every branch of the ramp was exercised


def test_features_that_say_nothing_rarely_get_guidance():
    # the permutation null is calibrated: random features pass Z_LOW about 2 % of the time
    passed = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        names = [f"P{i}" for i in range(8)]
        X, labels = _screen({n: rng.normal(0, 1, 30) for n in names}, 30, seed=seed)
        out = feature_reliability(X, [f"g{j}" for j in range(30)], labels, "ctrl",
                                  rng.normal(0, 1, (8, 6)), names)
        passed += out["scale"] > 0
    assert passed <= 3
