"""The effects layer without a model: effect table, estimators and plan on hand-made data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scdit.effects import (
    EffectConfig,
    EffectPlan,
    EffectTable,
    HeldOutContext,
    additive,
    effect_prior,
    posterior_effect,
    seen_mean,
    typical,
)


def _table(values, labels, contexts=None, **kw):
    contexts = contexts if contexts is not None else [()] * len(labels)
    return EffectTable(np.asarray(values, dtype=np.float64), labels, contexts, "ctrl", **kw)


def test_table_means_standard_errors_and_effects():
    X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 4.0], [6.0, 8.0], [1.0, 1.0]])
    labels = ["ctrl", "ctrl", "A", "A", "B"]
    t = _table(X, labels)
    np.testing.assert_allclose(t.mean("ctrl", ()), [1.0, 2.0])
    np.testing.assert_allclose(t.mean("A", ()), [5.0, 6.0])
    np.testing.assert_allclose(t.stats(())["A"][1], X[2:4].var(0, ddof=1) / 2)
    assert t.stats(())["B"][1] is None  # one cell: no standard error
    np.testing.assert_allclose(t.effect("A", ()), [4.0, 4.0])
    assert t.mean("C", ()) is None and t.effect("C", ()) is None
    assert t.has("B", ()) and not t.has("C", ())


def test_table_means_only_read_requested_groups_and_accept_sparse():
    X = sp.csr_matrix(np.arange(12, dtype=float).reshape(6, 2))
    read = []

    def values(rows):
        read.append(tuple(rows))
        return X[rows]

    t = EffectTable(values, ["ctrl", "ctrl", "A", "A", "B", "B"], [()] * 6, "ctrl",
                    with_se=False)
    np.testing.assert_allclose(t.mean("A", ()), [5.0, 6.0])
    assert read == [(2, 3)]


def test_table_contexts_and_pool():
    labels = ["ctrl", "A", "ctrl", "A", "ctrl"]
    ctx = [("x",), ("x",), ("y",), ("y",), ("z",)]
    t = _table(np.eye(5), labels, ctx)
    assert t.contexts == [("x",), ("y",), ("z",)]
    assert t.pool("A", exclude=("z",)) == [("x",), ("y",)]
    assert t.pool("A", exclude=("x",)) == [("y",)]


def test_shrunk_mean_is_the_posterior_under_the_context_prior():
    rng = np.random.default_rng(0)
    labels = ["ctrl"] * 20 + [f"P{i}" for i in range(6) for _ in range(5)]
    X = rng.normal(size=(len(labels), 4))
    t = _table(X, labels)
    stats = t.stats(())
    c, c_se2 = stats["ctrl"]
    effects = np.stack([stats[f"P{i}"][0] - c for i in range(6)])
    noise = np.stack([stats[f"P{i}"][1] + c_se2 for i in range(6)])
    sigma = effect_prior(effects, noise)
    expected = c + posterior_effect(effects[2], noise[2], sigma)
    np.testing.assert_allclose(t.shrunk_mean("P2", ()), expected)
    assert t.prior(())[1] == 6
    np.testing.assert_allclose(t.shrunk_mean("ctrl", ()), c)  # control is never shrunk


def test_seen_mean_and_additive_estimates():
    X = np.array([[1.0, 1.0], [1.0, 1.0], [3.0, 1.0], [1.0, 4.0], [9.0, 9.0]])
    t = _table(X, ["ctrl", "ctrl", "A", "B", "A+B"])
    np.testing.assert_allclose(seen_mean(t, "A+B", ()).mean(), [9.0, 9.0])
    est = additive(t, ("A", "B"), ())
    assert est.kind == "additive" and est.labels == [("A", 1.0), ("B", 1.0), ("ctrl", -1.0)]
    np.testing.assert_allclose(est.mean(), [3.0, 4.0])  # ctrl + (A - ctrl) + (B - ctrl)
    assert additive(t, ("A", "C"), ()) is None  # a member without cells
    assert additive(t, ("A",), ()) is None  # not a combination
    assert seen_mean(t, "C", ()) is None


def _context_data(slope: float, n_ctx: int = 5, d: int = 30, seed: int = 0):
    """Contexts whose effect shrinks with their control level (``E = a + slope (C - mean C)``)."""
    rng = np.random.default_rng(seed)
    base, a, u = rng.normal(size=d), rng.normal(size=d), rng.normal(size=d)
    rows, labels, ctx = [], [], []
    levels = np.linspace(-2, 2, n_ctx)
    for k, lev in enumerate(levels):
        ctrl = base + lev * u
        eff = a + slope * (ctrl - base)
        for lab, m in (("ctrl", ctrl), ("A", ctrl + eff)):
            cells = m + 0.01 * rng.normal(size=(20, d))
            rows.append(cells)
            labels += [lab] * 20
            ctx += [(f"c{k}",)] * 20
    return _table(np.vstack(rows), labels, ctx), a, base


def test_held_out_context_with_two_contexts_is_the_mean_shift():
    t, _, _ = _context_data(0.0, n_ctx=3)
    est = HeldOutContext(t).estimate("A", ("c2",))
    assert est.info["method"] == "mean" and est.info["loco"] is None
    shift = np.mean([t.effect("A", (f"c{k}",)) for k in (0, 1)], axis=0)
    np.testing.assert_allclose(est.mean(), t.mean("ctrl", ("c2",)) + shift)


def test_held_out_context_picks_the_slope_when_effects_follow_the_control_level():
    t, a, base = _context_data(-0.5, n_ctx=6)
    held = ("c5",)
    est = HeldOutContext(t).estimate("A", held)
    assert est.kind == "context" and est.info["method"] == "slope"
    assert est.info["param"] == pytest.approx(-0.5, abs=0.11)
    true = t.mean("A", held)
    mean_shift = t.mean("ctrl", held) + np.mean([t.effect("A", k) for k in t.pool("A", held)], 0)
    assert np.abs(est.mean() - true).mean() < 0.2 * np.abs(mean_shift - true).mean()
    given = t.mean("ctrl", held) + 1.0  # a given control mean moves the estimate
    assert HeldOutContext(t).estimate("A", held, given).info["c_from_source"]


def test_plan_auto_rules():
    X = np.random.default_rng(1).normal(size=(40, 3))
    labels = ["ctrl"] * 10 + ["A"] * 10 + ["B"] * 10 + ["A+C"] * 10
    t = _table(X, labels)
    plan = EffectPlan(t, seen_labels=["ctrl", "A", "B", "A+C"])
    auto = EffectConfig()
    assert plan.resolve("A", ("A",), [()], auto, {}, False)[()].kind == "seen"  # training mean
    assert plan.resolve("A", ("A",), [()], EffectConfig("none"), {}, False) is None
    est = plan.resolve("A+B", ("A", "B"), [()], auto, {}, False)[()]
    assert est.kind == "additive"  # 2 effects: too few for the default shrinkage
    assert plan.resolve("A+B", ("A", "B"), [()], EffectConfig("none"), {}, False) is None
    assert plan.resolve("A", ("A",), [()], EffectConfig("always"), {}, False)[()].kind == "seen"
    with pytest.raises(ValueError, match="effects='none'"):
        plan.resolve("B+D", ("B", "D"), [()], EffectConfig("always"), {}, False)
    shrunk = plan.resolve("A+B", ("A", "B"), [()], EffectConfig(shrink=True), {}, False)[()]
    assert shrunk.kind == "additive_shrunk"


def test_effect_config_validation():
    assert EffectConfig.coerce(None).mode == "none"
    assert EffectConfig.coerce("always").mode == "always"
    with pytest.raises(ValueError, match="mode"):
        EffectConfig("sometimes")
    with pytest.raises(ValueError, match="shrink"):
        EffectConfig("none", shrink=True)
    with pytest.raises(TypeError, match="effects must be"):
        EffectConfig.coerce(3)


def test_typical_estimate_averages_the_perturbations_of_the_context():
    X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 4.0], [6.0, 8.0], [1.0, 1.0], [9.0, 9.0],
                  [3.0, 3.0], [10.0, 20.0]])
    labels = ["ctrl", "ctrl", "A", "A", "B", "A", "ctrl", "ctrl"]
    ctxs = [("x",)] * 5 + [("y",)] * 2 + [("z",)]  # y: A and control; z: control only
    t = _table(X, labels, ctxs)
    est = typical(t, ["ctrl", "A", "B", "C"], ("x",))  # control and C (no cells) skipped
    assert est.kind == "typical" and est.labels == [("A", 0.5), ("B", 0.5)]
    np.testing.assert_allclose(est.mean(), [3.0, 3.5])  # each perturbation counts once
    np.testing.assert_allclose(typical(t, ["A", "B"], ("y",)).mean(), [9.0, 9.0])
    # z: its control plus the average effect of the (label, context) pairs elsewhere:
    # A in x (+4, +4), B in x (0, −1), A in y (+6, +6)
    pooled = typical(t, ["A", "B"], ("z",))
    assert pooled.labels == [] and pooled.info["pooled"]
    np.testing.assert_allclose(pooled.mean(), [10.0 + 10 / 3, 20.0 + 3.0])
    assert typical(t, ["ctrl"], ("x",)) is None
    assert typical(t, ["A"], ("w",)) is None  # no control cells there
    plan = EffectPlan(t, ["ctrl", "A", "B"])
    assert plan.typical([("x",)], EffectConfig(mode="none")) is None
    out = plan.typical([("x",), ("y",)], EffectConfig())
    np.testing.assert_allclose(out[("y",)].mean(), [9.0, 9.0])
    with pytest.raises(ValueError, match=r"needs control cells in context \('w',\).*covariates="):
        plan.typical([("w",)], EffectConfig())
