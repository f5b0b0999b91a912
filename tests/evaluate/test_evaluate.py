"""End-to-end tests of scdit.evaluate.evaluate on small synthetic AnnData."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from scdit.data import to_log1p
from scdit.evaluate import DEFINITIONS, METRICS, baseline_predictions, evaluate, summarize

G = 40
EFFECTS = {"A": (0, 5, 2.0), "B": (10, 15, -1.0), "C": (20, 25, 1.5)}  # genes [lo, hi) shifted


def _delta(cond: str) -> np.ndarray:
    d = np.zeros(G)
    for m in cond.split("+"):
        if m in EFFECTS:
            lo, hi, eff = EFFECTS[m]
            d[lo:hi] += eff
    return d


def _log1p_data(conds, n=60, seed=0, shift=0.0, cov=None) -> AnnData:
    """log1p-like data whose group means are exactly base + Σ member effects (additive)."""
    rng = np.random.default_rng(seed)
    base = 2.0 + np.linspace(0, 1, G) + shift
    blocks, labels = [], []
    for c in conds:
        noise = rng.normal(scale=0.3, size=(n, G))
        noise -= noise.mean(0)  # exact group means
        blocks.append(base + _delta(c) + noise)
        labels += [c] * n
    obs = pd.DataFrame({"condition": labels})
    if cov is not None:
        obs["cell_type"] = cov
    obs.index = obs.index.astype(str)
    var = pd.DataFrame(index=[f"g{i}" for i in range(G)])
    return AnnData(np.vstack(blocks).astype(np.float32), obs=obs, var=var)


def _counts_data(conds, n=80, seed=0) -> AnnData:
    rng = np.random.default_rng(seed)
    base = np.exp(np.linspace(0, 3, G))
    blocks, labels = [], []
    for c in conds:
        rate = base * np.exp(_delta(c))
        blocks.append(rng.poisson(rate, size=(n, G)).astype(np.float32))
        labels += [c] * n
    obs = pd.DataFrame({"condition": labels}, index=[str(i) for i in range(len(labels))])
    return AnnData(sp.csr_matrix(np.vstack(blocks)), obs=obs, var=pd.DataFrame(index=_genes()))


def _genes():
    return pd.Index([f"g{i}" for i in range(G)])


def _value(df, method, cond, metric):
    sel = df[(df.method == method) & (df.condition == cond) & (df.metric == metric)]
    assert len(sel) == 1
    return sel["value"].iloc[0]


CONDS = ["ctrl", "A", "B", "C", "A+B", "A+C"]


def test_output_format_and_true_cells_beat_no_change():
    real = _log1p_data(CONDS, seed=0)
    pred = _log1p_data(CONDS, seed=1)  # independent draw of the same distribution
    df = evaluate(pred, real, "condition")
    assert list(df.columns) == ["method", "condition", "covariate", "metric", "value"]
    assert df.covariate.isna().all()
    assert set(df.metric) == set(METRICS) and df.attrs["definitions"] == DEFINITIONS
    assert "Euclidean" in df.attrs["definitions"]["energy_distance"]
    assert "scikit-learn" in df.attrs["definitions"]["r2_de"]
    assert set(df.condition) == {"A", "B", "C", "A+B", "A+C"}
    assert df.attrs["settings"]["control"] == "ctrl"
    assert not df.duplicated(["method", "condition", "metric"]).any()
    # additive only for the combinations
    assert set(df[df.method == "additive"].condition) == {"A+B", "A+C"}
    for c in ["A", "A+B"]:
        assert _value(df, "scdit", c, "pearson_delta") > 0.99
        assert _value(df, "scdit", c, "mse") < _value(df, "no_change", c, "mse")
        ed = _value(df, "scdit", c, "energy_distance")
        assert ed < _value(df, "no_change", c, "energy_distance")
    # the top-5 DE genes of A are its 5 shifted genes (the others have a zero real delta)
    df5 = evaluate(pred, real, "condition", top_k_de=5)
    assert _value(df5, "scdit", "A", "direction_accuracy") == 1.0
    assert _value(df5, "no_change", "A", "direction_accuracy") == 0.0
    s = summarize(df)
    assert list(s.index) == ["scdit", "no_change", "mean", "additive"]
    assert s.loc["scdit", "discrimination_cosine"] == 1.0
    # no change is a constant predictor: discrimination 0.5 on average; its Pearson Δ is undefined
    assert s.loc["no_change", "discrimination_l2"] == pytest.approx(0.5)
    assert np.isnan(s.loc["no_change", "pearson_delta"])


def test_identical_cells_score_perfectly():
    real = _log1p_data(CONDS)
    df = evaluate(real, real, "condition", baselines=())
    s = summarize(df)
    assert set(df.method) == {"scdit"}
    assert s.loc["scdit", "energy_distance"] == pytest.approx(0.0, abs=1e-6)
    assert s.loc["scdit", "mse"] == pytest.approx(0.0, abs=1e-10)
    assert s.loc["scdit", "pearson_delta_de"] == pytest.approx(1.0)


def test_additive_baseline_on_perfectly_additive_data():
    real = _log1p_data(CONDS)
    pred = _log1p_data(CONDS, seed=3)
    # leave-one-out from real (A+B's own cells never used) ...
    df = evaluate(pred, real, "condition", conditions=["A+B", "A+C"])
    for c in ["A+B", "A+C"]:
        assert _value(df, "additive", c, "pearson_delta") == pytest.approx(1.0, abs=1e-6)
        assert _value(df, "additive", c, "mse") == pytest.approx(0.0, abs=1e-10)
    # ... and from an explicit training set with the singles only
    train = _log1p_data(["ctrl", "A", "B", "C"], seed=5)
    df = evaluate(pred, real, "condition", train=train)
    assert _value(df, "additive", "A+B", "pearson_delta") == pytest.approx(1.0, abs=1e-6)
    assert df.attrs["settings"]["baseline_source"] == "train"
    # mean baseline = control + average effect of the training conditions A, B, C
    mean_pred = _value(df, "mean", "A+B", "mse")
    expected = np.mean((np.mean([_delta(c) for c in "ABC"], 0) - _delta("A+B")) ** 2)
    assert mean_pred == pytest.approx(expected, rel=1e-5)


def test_mean_baseline_leaves_the_evaluated_condition_out():
    real = _log1p_data(["ctrl", "A", "B", "C"])
    df = evaluate(real, real, "condition")
    expected = np.mean((np.mean([_delta("B"), _delta("C")], 0) - _delta("A")) ** 2)
    assert _value(df, "mean", "A", "mse") == pytest.approx(expected, rel=1e-5)


def test_counts_and_log1p_inputs_give_the_same_result():
    real = _counts_data(CONDS, seed=0)
    pred = _counts_data(CONDS, seed=1)
    df_counts = evaluate(pred, real, "condition")
    real_l = AnnData(to_log1p(real.X), obs=real.obs, var=real.var)
    pred_l = AnnData(to_log1p(pred.X).toarray(), obs=pred.obs, var=pred.var)
    df_log = evaluate(pred_l, real_l, "condition")
    pd.testing.assert_frame_equal(df_counts, df_log, rtol=1e-5)
    # layer= picks the representation of real
    real_c = real_l.copy()
    real_c.layers["counts"] = real.X
    real_c.X = sp.csr_matrix(real_c.shape, dtype=np.float32)
    df_layer = evaluate(pred, real_c, "condition", layer="counts")
    pd.testing.assert_frame_equal(df_counts, df_layer, rtol=1e-5)


def test_gene_alignment():
    real = _log1p_data(CONDS)
    pred = _log1p_data(CONDS, seed=1)
    ref = evaluate(pred, real, "condition")
    # extra and shuffled genes in pred are aligned by name
    X = np.hstack([pred.X[:, ::-1], np.ones((pred.n_obs, 2), dtype=np.float32)])
    genes = list(pred.var_names[::-1]) + ["extra1", "extra2"]
    shuffled = AnnData(X, obs=pred.obs, var=pd.DataFrame(index=genes))
    pd.testing.assert_frame_equal(ref, evaluate(shuffled, real, "condition"))
    with pytest.raises(ValueError, match=r"lacks 4 .*g3"):
        evaluate(pred[:, 4:].copy(), real, "condition")


def test_control_detection_errors():
    real = _log1p_data(CONDS)
    pred = _log1p_data(CONDS, seed=1)
    real.obs["condition"] = real.obs["condition"].replace("ctrl", "baseline")
    with pytest.raises(ValueError, match=r"No control label.*baseline"):
        evaluate(pred, real, "condition")
    with pytest.raises(ValueError, match="not found"):
        evaluate(pred, real, "condition", control="DMSO")
    df = evaluate(pred, real, "condition", control="baseline", baselines=("no_change",))
    assert set(df.condition) == {"A", "B", "C", "A+B", "A+C"}
    with pytest.raises(ValueError, match="missing from `pred`"):
        kept = pred[pred.obs.condition != "B"].copy()
        evaluate(kept, real, "condition", control="baseline", conditions=["B"])
    with pytest.raises(ValueError, match="Unknown baselines"):
        evaluate(pred, real, "condition", baselines=("quadratic",))


def test_covariate_contexts():
    conds = ["ctrl", "A", "B", "A+B"]
    n = 30
    cov_a = ["t1"] * (n * len(conds))
    cov_b = ["t2"] * (n * len(conds))
    r1 = _log1p_data(conds, n=n, seed=0, cov=cov_a)
    r2 = _log1p_data(conds, n=n, seed=1, shift=1.0, cov=cov_b)  # other baseline expression
    obs = pd.concat([r1.obs, r2.obs], ignore_index=True)
    obs.index = obs.index.astype(str)
    real = AnnData(np.vstack([r1.X, r2.X]), obs=obs, var=r1.var)
    df = evaluate(real, real, "condition", covariate_key="cell_type")
    assert set(zip(df.condition, df.covariate, strict=True)) == {
        (c, t) for c in ["A", "B", "A+B"] for t in ["t1", "t2"]
    }
    sel = df[(df.method == "additive") & (df.metric == "pearson_delta")]
    np.testing.assert_allclose(sel["value"], 1.0, atol=1e-6)
    # deltas use the control of the same context: the t2 shift is not an effect
    sel = df[(df.method == "scdit") & (df.metric == "mse")]
    np.testing.assert_allclose(sel["value"], 0.0, atol=1e-10)
    nc = df[(df.method == "no_change") & (df.metric == "mse") & (df.condition == "A")]
    np.testing.assert_allclose(nc["value"], np.mean(_delta("A") ** 2), rtol=1e-5)
    # held-out context: train has t1 and only the control of t2; effects come from t1
    train = real[(real.obs.cell_type == "t1") | (real.obs.condition == "ctrl")].copy()
    test = real[real.obs.cell_type == "t2"].copy()
    df = evaluate(test, test, "condition", covariate_key="cell_type", train=train)
    assert set(df.covariate) == {"t2"}
    assert _value(df, "additive", "A+B", "pearson_delta") == pytest.approx(1.0, abs=1e-6)
    expected = np.mean((np.mean([_delta(c) for c in ["A", "B", "A+B"]], 0) - _delta("A")) ** 2)
    assert _value(df, "mean", "A", "mse") == pytest.approx(expected, rel=1e-5)


def test_baseline_predictions_round_trip():
    real = _log1p_data(CONDS)
    base = baseline_predictions(real, "condition")
    assert set(base) == {"no_change", "mean", "additive", "context_shift"}
    assert set(base["additive"].obs.condition) == {"A+B", "A+C"}
    df = evaluate(real, real, "condition")
    again = evaluate(base["mean"], real, "condition", baselines=(), method_name="mean")
    for metric in ["pearson_delta", "mse", "discrimination_cosine", "energy_distance"]:
        for c in ["A", "A+C"]:
            assert _value(again, "mean", c, metric) == pytest.approx(
                _value(df, "mean", c, metric), rel=1e-5, abs=1e-6
            )


def test_constant_mean_baseline_discrimination_and_nan_prediction():
    real = _log1p_data(CONDS)
    pred = _log1p_data(CONDS, seed=1)
    train = _log1p_data(["ctrl", "A", "B", "C"], seed=2)
    df = evaluate(pred, real, "condition", train=train, baselines=("mean",))
    s = summarize(df)
    for metric in ("cosine", "l1", "l2"):  # same shift for every condition: a constant predictor
        assert s.loc["mean", f"discrimination_{metric}"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="clashes"):
        evaluate(pred, real, "condition", method_name="mean")
    pred.X[pred.obs.condition.to_numpy() == "A", 0] = np.nan  # never scored as NaN: an error
    with pytest.raises(ValueError, match=r"`pred`.X holds 60 NaN, 0 infinite and 0 negative"):
        evaluate(pred, real, "condition", baselines=())


def test_scdit_evaluate_is_callable_module():
    import scdit

    assert callable(scdit.evaluate)
    assert scdit.evaluate.summarize is summarize
    assert scdit.evaluate.evaluate is evaluate


def _random_effect_data(n_singles: int, seed: int = 0, n: int = 30) -> tuple[AnnData, AnnData]:
    """Train (control + singles S0..) and real (control + S0+S1) with low-rank random effects."""
    rng = np.random.default_rng(seed)
    programmes = rng.normal(size=(2, G))
    labels = ["ctrl"] + [f"S{i}" for i in range(n_singles)]
    eff = {lab: (0.0 if lab == "ctrl" else rng.normal(size=2) @ programmes * 0.3) for lab in labels}
    eff["S0+S1"] = eff["S0"] + eff["S1"]

    def make(labs):
        X = np.vstack([4.0 + eff[lab] + rng.normal(scale=0.5, size=(n, G)) for lab in labs])
        obs = pd.DataFrame({"condition": np.repeat(labs, n)}, index=[str(i) for i in range(len(X))])
        return AnnData(X=X.astype(np.float32), obs=obs)

    return make(labels), make(["ctrl", "S0+S1"])


def test_additive_shrunk_baseline_is_the_sum_of_posterior_effects():
    train, real = _random_effect_data(12)
    out = baseline_predictions(real, "condition", control="ctrl", train=train,
                               baselines=("additive", "additive_shrunk"))
    X = train.X
    lab = train.obs.condition.to_numpy()
    mean = {c: X[lab == c].mean(0).astype(np.float64) for c in set(lab)}
    se2 = {c: X[lab == c].astype(np.float64).var(0, ddof=1) / (lab == c).sum() for c in set(lab)}
    singles = [c for c in mean if c != "ctrl"]
    d = {c: mean[c] - mean["ctrl"] for c in singles}
    noise = {c: se2[c] + se2["ctrl"] for c in singles}
    E = np.stack([d[c] for c in singles])
    sigma = E.T @ E / len(singles) - np.diag(np.mean([noise[c] for c in singles], 0))
    w, v = np.linalg.eigh(sigma)
    sigma = (v * np.clip(w, 0, None)) @ v.T

    def post(c):
        nz = np.maximum(noise[c], 1e-2 * noise[c].mean())
        return sigma @ np.linalg.solve(sigma + np.diag(nz), d[c])

    ctrl_real = real.X[real.obs.condition.to_numpy() == "ctrl"].mean(0)
    for kind, expected in (("additive", d["S0"] + d["S1"]), ("additive_shrunk", post("S0") + post("S1"))):
        shift = out[kind].X.mean(0) - ctrl_real
        np.testing.assert_allclose(shift, expected, atol=1e-4)
    # evaluate scores it like any other baseline
    truth = real.X[real.obs.condition.to_numpy() == "S0+S1"].mean(0) - ctrl_real
    df = evaluate(out["additive_shrunk"], real, "condition", control="ctrl", train=train,
                  baselines=("additive", "additive_shrunk"))
    assert _value(df, "additive_shrunk", "S0+S1", "pearson_delta") == pytest.approx(
        np.corrcoef(post("S0") + post("S1"), truth)[0, 1], abs=1e-3)


def test_additive_shrunk_equals_additive_with_few_effects():
    train, real = _random_effect_data(5)  # fewer than 10 training effects: no prior
    out = baseline_predictions(real, "condition", control="ctrl", train=train,
                               baselines=("additive", "additive_shrunk"))
    np.testing.assert_allclose(out["additive_shrunk"].X, out["additive"].X, atol=1e-6)


def test_context_shift_baseline_uses_other_contexts_only():
    import anndata as ad

    from scdit.evaluate import evaluate

    rng = np.random.default_rng(0)
    rows, obs = [], []
    effect = {"A": 1.0, "B": 3.0}  # gene 0 shift of perturbation P per context
    for ctx in ("A", "B"):
        for cond in ("ctrl", "P"):
            for _ in range(40):
                x = rng.normal(2.0, 0.01, size=4)
                if cond == "P":
                    x[0] += effect[ctx]
                rows.append(x)
                obs.append((cond, ctx))
    adata = ad.AnnData(np.asarray(rows, np.float32),
                       obs=pd.DataFrame(obs, columns=["condition", "ct"]))
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    train = adata[~((adata.obs.condition == "P") & (adata.obs.ct == "B"))].copy()
    real = adata[adata.obs.ct == "B"].copy()
    pred = real[real.obs.condition == "P"].copy()
    df = evaluate(pred, real, "condition", control="ctrl", train=train, covariate_key="ct",
                  baselines=("context_shift",))
    mse = df[(df.method == "context_shift") & (df.metric == "mse")]["value"].iloc[0]
    # context_shift predicts context A's effect (1.0) on B's controls: MSE on gene 0 = (3-1)²/4
    assert mse == pytest.approx(4.0 / 4, rel=0.05)
