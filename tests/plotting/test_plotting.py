"""scdit.pl on small synthetic AnnData (no model needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.figure import Figure

import scdit
from scdit import pl
from scdit.evaluate import baseline_predictions, evaluate

G = 30
EFFECTS = {"A": (0, 6, 1.5), "B": (10, 16, -1.0), "C": (20, 26, 0.8)}


def _delta(cond: str) -> np.ndarray:
    d = np.zeros(G)
    for m in cond.split("+"):
        if m in EFFECTS:
            lo, hi, eff = EFFECTS[m]
            d[lo:hi] += eff
    return d


def _data(conds, n=40, seed=0, noise=0.3, prefix="c") -> AnnData:
    """log1p-like cells: base + Σ member effects + noise."""
    rng = np.random.default_rng(seed)
    base = 2.0 + np.linspace(0, 1, G)
    X = np.vstack([base + _delta(c) + rng.normal(scale=noise, size=(n, G)) for c in conds])
    obs = pd.DataFrame({"perturbation": np.repeat(conds, n)},
                       index=[f"{prefix}{i}" for i in range(n * len(conds))])
    return AnnData(X=np.clip(X, 0, None).astype(np.float32), obs=obs,
                   var=pd.DataFrame(index=[f"g{i}" for i in range(G)]))


@pytest.fixture(scope="module")
def data():
    train = _data(["control", "A", "B", "C"], seed=1)
    real = _data(["control", "A+B", "B+C"], seed=2)
    pred = _data(["A+B", "B+C"], seed=3, noise=0.5, prefix="p")
    return train, real, pred


def test_delta_scatter_writes_and_matches_evaluate(data, tmp_path):
    train, real, pred = data
    add = baseline_predictions(real, "perturbation", control="control", train=train,
                               baselines=("additive",))["additive"]
    out = tmp_path / "sub" / "delta.png"
    fig = pl.delta_scatter(pred, real, "perturbation", "control", baseline=add, save=out)
    assert isinstance(fig, Figure) and out.stat().st_size > 0
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    assert "r: scdit" in fig.axes[0].get_title() and "additive" in fig.axes[0].get_title()
    df = evaluate(pred, real, "perturbation", control="control", train=train)
    pdel = df[df.metric == "pearson_delta"].set_index(["method", "condition"])["value"]
    for (cond, _), r in fig.scdit_pearson.items():
        assert r["scdit"] == pytest.approx(pdel[("scdit", cond)], abs=1e-6)
        assert r["additive"] == pytest.approx(pdel[("additive", cond)], abs=1e-6)
        assert r["scdit"] > 0.8


def test_delta_scatter_counts_axes_and_errors(data):
    _, real, pred = data
    rng = np.random.default_rng(0)
    counts = real.copy()
    counts.X = sp.csr_matrix(rng.poisson(np.expm1(real.X)).astype(np.float32))
    fig = Figure()
    axes = fig.subplots(1, 3)
    got = pl.delta_scatter(pred, counts, "perturbation", conditions=["B+C"], ax=axes,
                           label_genes=2)
    assert got is fig
    assert axes[0].get_title().startswith("B+C") and not axes[1].has_data()
    with pytest.raises(ValueError, match="missing"):
        pl.delta_scatter(pred, real, "perturbation", "control", conditions=["A"])
    with pytest.raises(ValueError, match="Axes"):
        pl.delta_scatter(pred, real, "perturbation", "control", ax=axes[0])
    with pytest.raises(ValueError, match="control"):
        pl.delta_scatter(pred, real, "perturbation", "control", conditions=["control"])


def test_delta_scatter_covariate(data):
    _, real, pred = data
    r2, p2 = real.copy(), pred.copy()
    r2.obs["cell_type"] = np.where(np.arange(r2.n_obs) % 2, "x", "y")
    p2.obs["cell_type"] = np.where(np.arange(p2.n_obs) % 2, "x", "y")
    fig = pl.delta_scatter(p2, r2, "perturbation", covariate_key="cell_type")
    assert set(fig.scdit_pearson) == {(c, t) for c in ("A+B", "B+C") for t in "xy"}
    assert " | " in fig.axes[0].get_title()


def test_embedding(data, tmp_path):
    _, real, pred = data
    real_x, pred_x = real.X.copy(), pred.X.copy()
    real_obs, pred_obs = real.obs.copy(), pred.obs.copy()
    fig = pl.embedding(real, pred, "perturbation", save=tmp_path / "umap.png", n_pcs=10)
    assert (tmp_path / "umap.png").stat().st_size > 0
    emb = fig.scdit_embedding
    assert emb.obsm["X_umap"].shape == (real.n_obs + pred.n_obs, 2)
    assert emb.obs["source"].value_counts().to_dict() == {"real": real.n_obs,
                                                          "generated": pred.n_obs}
    assert [a.get_title() for a in fig.axes[:2]] == ["real vs generated", "perturbation"]
    # inputs untouched
    np.testing.assert_array_equal(real.X, real_x)
    np.testing.assert_array_equal(pred.X, pred_x)
    pd.testing.assert_frame_equal(real.obs, real_obs)
    pd.testing.assert_frame_equal(pred.obs, pred_obs)
    assert not real.obsm and not pred.obsm and not real.uns and not pred.uns
    # counts input, one panel into a given Axes, subsample and condition filter
    counts = real.copy()
    counts.X = sp.csr_matrix(np.round(np.expm1(real.X)))
    ax = Figure().subplots()
    fig2 = pl.embedding(counts, pred, "perturbation", color="source", ax=ax, max_cells=50,
                        conditions=["control", "A+B"], n_pcs=5)
    assert fig2 is ax.figure
    assert fig2.scdit_embedding.n_obs == 50 + 40
    with pytest.raises(KeyError, match="color"):
        pl.embedding(real, pred, "perturbation", color="nope")


def test_metric_bars(data, tmp_path):
    train, real, pred = data
    df = evaluate(pred, real, "perturbation", control="control", train=train)
    fig = pl.metric_bars(df, save=tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0
    assert sum(a.get_visible() for a in fig.axes) == df.metric.nunique()
    fig = pl.metric_bars(df, ["pearson_delta", "mse"], methods=["scdit", "additive"])
    titles = [a.get_title() for a in fig.axes if a.get_visible()]
    assert titles == ["pearson_delta ↑", "mse ↓"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["scdit", "additive"]
    # bar heights are the means
    heights = [p.get_height() for p in fig.axes[0].patches]
    expect = df[df.metric == "pearson_delta"].groupby("method")["value"].mean()
    np.testing.assert_allclose(heights, expect[["scdit", "additive"]].to_numpy())
    with pytest.raises(ValueError, match="Unknown metrics"):
        pl.metric_bars(df, ["nope"])


class _FakeModel:
    def __init__(self, history):
        self.summary = {"history": history}


def test_training_curve(tmp_path):
    hist = [{"step": 250, "val_loss": 0.9}, {"step": 500, "val_loss": 0.7},
            {"step": 750, "val_loss": 0.75}]
    fig = pl.training_curve(_FakeModel(hist), save=tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [250, 500, 750])
    assert "best 0.7000" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # a bare history list, an empty history and a given Axes
    assert isinstance(pl.training_curve(hist), Figure)
    ax = Figure().subplots()
    fig = pl.training_curve(_FakeModel([]), ax=ax, save=tmp_path / "empty.png")
    assert fig is ax.figure and (tmp_path / "empty.png").exists()
    with pytest.raises(TypeError):
        pl.training_curve(object())


def test_lazy_namespace():
    assert scdit.pl is pl
    assert {"delta_scatter", "embedding", "metric_bars", "training_curve"} <= set(pl.__all__)
