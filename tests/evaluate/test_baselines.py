"""Linear, cell-weighted mean and ceiling baselines; MMD and E-distance; normalised scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

from scdit.evaluate import (
    LinearBaseline,
    baseline_predictions,
    evaluate,
    normalized_scores,
    summarize,
)
from scdit.evaluate import metrics as M

N_GENES, RANK = 30, 3


def _linear_truth(seed: int = 0):
    """Gene embedding G0 with ± paired training targets (so the row mean b is 0) and K0."""
    rng = np.random.default_rng(seed)
    G0 = rng.normal(0, 1.0, (N_GENES, RANK))
    for j in range(0, 8, 2):
        G0[j + 1] = -G0[j]
    K0 = rng.normal(0, 1.0, (RANK, RANK))
    return G0, K0


def _effect(G0, K0, cond: str) -> np.ndarray:
    p = sum(G0[int(m[1:])] for m in cond.split("+"))
    return G0 @ K0 @ p


def _cells(conds, G0, K0, n=40, seed=0, noise=0.2) -> AnnData:
    rng = np.random.default_rng(seed)
    base = 12.0 + np.linspace(0, 1, N_GENES)
    blocks, labels = [], []
    for c in conds:
        eps = rng.normal(0, noise, (n, N_GENES))
        eps -= eps.mean(0)  # exact group means
        d = np.zeros(N_GENES) if c == "ctrl" else _effect(G0, K0, c)
        blocks.append(base + d + eps)
        labels += [c] * n
    obs = pd.DataFrame({"condition": labels}, index=[f"c{seed}_{i}" for i in range(len(labels))])
    return AnnData(np.vstack(blocks), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in
                                                                        range(N_GENES)]))


TRAIN = ["ctrl"] + [f"g{j}" for j in range(8)]
TEST = ["ctrl", "g10", "g11", "g10+g11"]


def test_linear_baseline_exact_on_linear_data():
    G0, K0 = _linear_truth()
    train, real = _cells(TRAIN, G0, K0, seed=1), _cells(TEST, G0, K0, seed=2)
    df = evaluate(real, real, "condition", train=train, baselines=("linear", "mean"),
                  linear={"ridge": 0.0})
    s = summarize(df)
    assert s.loc["linear", "mse"] < 1e-12
    assert s.loc["linear", "pearson_delta"] == pytest.approx(1.0, abs=1e-9)
    assert set(df[df.method == "linear"].condition) == {"g10", "g11", "g10+g11"}
    assert s.loc["mean", "mse"] > 1e-3
    # the default ridge (λ = 0.1) is close, and the class predicts the same directly
    s01 = summarize(evaluate(real, real, "condition", train=train, baselines=("linear",)))
    assert s01.loc["linear", "pearson_delta"] > 0.99
    effects = {(c, None): _effect(G0, K0, c) for c in TRAIN[1:]}
    lin = LinearBaseline(effects, real.var_names, control="ctrl", ridge=0.0)
    assert lin.G.shape == (N_GENES, RANK)  # clipped to the rank of Y
    np.testing.assert_allclose(lin.predict("g11+g10"), _effect(G0, K0, "g10+g11"), atol=1e-10)
    assert lin.predict("unmeasured") is None


def test_linear_baseline_user_embedding_and_predictions():
    G0, K0 = _linear_truth()
    train, real = _cells(TRAIN, G0, K0, seed=1), _cells(TEST, G0, K0, seed=2)
    emb = pd.DataFrame(G0, index=[f"g{i}" for i in range(N_GENES)])
    df = evaluate(real, real, "condition", train=train, baselines=("linear",),
                  perturbation_embedding=emb.iloc[:11], linear={"ridge": 0.0})
    s = summarize(df)
    assert s.loc["linear", "mse"] < 1e-12
    # g11 is missing from the embedding: g11 and g10+g11 are not applicable
    assert set(df[df.method == "linear"].condition) == {"g10"}
    base = baseline_predictions(real, "condition", train=train,
                                baselines=("linear", "mean_cell_weighted"))
    assert set(base["linear"].obs.condition) == {"g10", "g11", "g10+g11"}
    with pytest.raises(ValueError, match="Unknown baselines"):
        baseline_predictions(real, "condition", baselines=("ceiling",))


def test_mean_cell_weighted():
    G0, K0 = _linear_truth()
    train = _cells(TRAIN, G0, K0, seed=1)
    big = _cells(["g0"], G0, K0, n=120, seed=3)
    big.obs_names = [f"b{i}" for i in range(big.n_obs)]
    import anndata as ad

    train = ad.concat([train, big])  # g0 now has 40 + 120 cells
    real = _cells(TEST, G0, K0, seed=2)
    df = evaluate(real, real, "condition", train=train,
                  baselines=("mean", "mean_cell_weighted"))
    n = np.array([160] + [40] * 7, float)
    eff = np.array([_effect(G0, K0, c) for c in TRAIN[1:]])
    d = real.X[real.obs.condition.to_numpy() == "g10"].mean(0) - 12.0 - np.linspace(0, 1, N_GENES)
    for kind, w in (("mean", None), ("mean_cell_weighted", n)):
        expected = np.mean((np.average(eff, axis=0, weights=w) - d) ** 2)
        got = df[(df.method == kind) & (df.condition == "g10") & (df.metric == "mse")].value
        assert float(got.iloc[0]) == pytest.approx(expected, rel=1e-6)


def test_ceiling():
    G0, K0 = _linear_truth()
    noiseless = _cells(TEST, G0, K0, noise=0.0)
    s = summarize(evaluate(noiseless, noiseless, "condition", baselines=("ceiling",)))
    for metric in ("mse", "energy_distance", "mmd"):
        assert s.loc["ceiling", metric] == pytest.approx(0.0, abs=1e-10)
    assert s.loc["ceiling", "pearson_delta"] == pytest.approx(1.0)
    real = _cells(TEST, G0, K0, n=60, noise=0.5, seed=4)
    df = evaluate(real, real, "condition", baselines=("no_change", "ceiling"), seed=3)
    s = summarize(df)
    assert 0.5 < s.loc["ceiling", "pearson_delta"] < 1.0  # halves differ by noise
    assert s.loc["ceiling", "mse"] > 0
    assert s.loc["ceiling", "energy_distance"] < s.loc["no_change", "energy_distance"]
    assert s.loc["ceiling", "discrimination_l1"] > 0.5
    again = evaluate(real, real, "condition", baselines=("no_change", "ceiling"), seed=3)
    pd.testing.assert_frame_equal(df, again)


def test_mmd_and_energy_sq():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = rng.normal(size=(70, 5))
    assert M.mmd(x, x) == pytest.approx(0.0, abs=1e-12)
    near, far = M.mmd(x, y), M.mmd(x, y + 1.0)
    assert 0 < near < far
    bw = [0.7, 1.4]
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)

    def k(a, b):
        d2 = torch.cdist(a, b) ** 2
        return np.mean([float(torch.exp(-d2 / (2 * s**2)).mean()) for s in bw])

    assert M.mmd(x, y, bandwidths=bw) == pytest.approx(k(xt, xt) + k(yt, yt) - 2 * k(xt, yt))
    # E-distance (squared distances, distinct pairs within sets) against brute force
    d_xy = (torch.cdist(xt, yt) ** 2).mean()
    off = ~torch.eye(80, dtype=bool)
    d_xx = (torch.cdist(xt, xt) ** 2)[off].mean()
    d_yy = (torch.cdist(yt, yt) ** 2)[~torch.eye(70, dtype=bool)].mean()
    brute = float(2 * d_xy - d_xx - d_yy)
    assert M.energy_distance(x, y, squared=True) == pytest.approx(brute, rel=1e-9)
    assert M.energy_distance(x, y) != pytest.approx(brute)  # the Euclidean default differs


def test_new_metrics_in_evaluate_and_constant_predictor():
    G0, K0 = _linear_truth()
    train, real = _cells(TRAIN, G0, K0, seed=1), _cells(TEST, G0, K0, seed=2)
    pred = _cells(TEST, G0, K0, seed=5)
    df = evaluate(pred, real, "condition", train=train,
                  baselines=("no_change", "mean", "mean_cell_weighted", "linear", "ceiling"))
    s = summarize(df)
    assert {"mmd", "energy_distance_sq"} <= set(df.metric)
    assert "squared" in df.attrs["definitions"]["energy_distance_sq"]
    assert s.loc["scdit", "mmd"] < s.loc["no_change", "mmd"]
    for kind in ("no_change", "mean", "mean_cell_weighted"):  # constant predictors
        for metric in ("cosine", "l1", "l2"):
            assert s.loc[kind, f"discrimination_{metric}"] == pytest.approx(0.5)


def test_normalized_scores_by_hand():
    rows = []
    for method, pd_, mse in (("model", 0.6, 2.0), ("mean", 0.4, 4.0), ("ceiling", 0.9, 1.0),
                             ("bad", 0.3, 5.0)):
        rows += [(method, "A", None, "pearson_delta", pd_), (method, "A", None, "mse", mse),
                 (method, "A", None, "r2_de", 0.5 if method == "ceiling" else 0.7)]
    df = pd.DataFrame(rows, columns=["method", "condition", "covariate", "metric", "value"])
    n = normalized_scores(df)
    assert n.loc["model", "pearson_delta"] == pytest.approx(0.2 / 0.5)
    assert n.loc["model", "mse"] == pytest.approx(2.0 / 3.0)  # lower is better
    assert n.loc["bad", "mse"] == pytest.approx(-1.0 / 3.0)
    assert n.loc["mean", "mse"] == 0.0 and n.loc["ceiling", "mse"] == 1.0
    assert n["r2_de"].isna().all()  # ceiling not better than the baseline
    with pytest.raises(ValueError, match="linear"):
        normalized_scores(df, baseline="linear")


def test_seen_mean_is_the_conditions_own_training_effect():
    """``seen_mean`` shifts the real control cells by the condition's training effect."""
    rng = np.random.default_rng(3)
    base = np.full(N_GENES, 5.0)
    effects = {"ctrl": np.zeros(N_GENES), "A": rng.normal(0, 1, N_GENES),
               "B": rng.normal(0, 1, N_GENES)}

    def cells(seed, shift_scale=1.0):
        r = np.random.default_rng(seed)
        blocks, labels = [], []
        for c, d in effects.items():
            eps = r.normal(0, 0.3, (50, N_GENES))
            eps -= eps.mean(0)
            blocks.append(base + shift_scale * d + eps)
            labels += [c] * 50
        obs = pd.DataFrame({"condition": labels}, index=[f"s{seed}_{i}" for i in range(150)])
        return AnnData(np.vstack(blocks), obs=obs,
                       var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))

    train, real = cells(1), cells(2, shift_scale=0.5)  # held-out cells: half the effect
    preds = baseline_predictions(real, "condition", control="ctrl", train=train,
                                 baselines=("seen_mean",))["seen_mean"]
    for c in ("A", "B"):
        got = preds[preds.obs["condition"] == c].X.mean(0) - base
        np.testing.assert_allclose(got, effects[c], atol=1e-5)  # float32 cells
    df = evaluate(real, real, "condition", control="ctrl", train=train,
                  baselines=("seen_mean", "mean"))
    row = df[(df["method"] == "seen_mean") & (df["condition"] == "A")
             & (df["metric"] == "pearson_delta")]
    assert row["value"].iloc[0] == pytest.approx(1.0, abs=1e-6)  # same direction, half the size
    # without train the group itself is left out of real: the baseline does not apply
    df2 = evaluate(real, real, "condition", control="ctrl", baselines=("seen_mean",))
    assert "seen_mean" not in set(df2["method"])


def test_seen_mean_without_train_is_the_context_shift():
    """Without ``train`` the evaluated group is left out of ``real``: with covariates only the
    condition's other contexts remain, so ``seen_mean`` is ``context_shift`` (docs/evaluation.md)."""
    rng = np.random.default_rng(4)
    rows, X = [], []
    for ct, gain in (("T", 1.0), ("B", 2.0), ("M", 3.0)):
        for c in ("ctrl", "A"):
            X.append(rng.normal(5.0 + gain * (c == "A"), 0.3, (30, N_GENES)))
            rows += [(c, ct)] * 30
    obs = pd.DataFrame(rows, columns=["condition", "ct"], index=[f"c{i}" for i in range(90 * 2)])
    real = AnnData(np.vstack(X), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    df = evaluate(real, real, "condition", control="ctrl", covariate_key="ct",
                  baselines=("seen_mean", "context_shift"))
    wide = df.pivot_table(index=["condition", "covariate", "metric"], columns="method", values="value")
    assert len(wide["seen_mean"].dropna()) > 0
    np.testing.assert_allclose(wide["seen_mean"], wide["context_shift"])
