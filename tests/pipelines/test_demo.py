"""scdit.demo: a quick smoke test with a stand-in model, and the real --fast run (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

import scdit
from scdit import demo

FILES = ("metrics.csv", "summary.csv", "summary.json", "delta_scatter.png", "umap.png",
         "metric_bars.png", "training_curve.png", "report.md", "run.json", "model/oracle.txt")


class _Oracle:
    """Stand-in for a fitted model: predicts the real held-out cells (so it must score best)."""

    def __init__(self, test):
        self.test = test
        self.summary = {"steps": 2, "history": [{"step": 1, "val_loss": 1.0},
                                                 {"step": 2, "val_loss": 0.8}]}
        self.calls = []

    def save(self, path, overwrite=False):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "oracle.txt").write_text("ok")

    def predict(self, cond, n_cells=None, *, source=None, seed=None):
        assert set(source.obs["perturbation"]) == {"control"}
        self.calls.append((cond, n_cells))
        cells = self.test[self.test.obs["perturbation"] == cond].copy()
        assert n_cells == max(cells.n_obs, demo.CELLS_PER_CONDITION)
        cells.obs_names = [f"{cond}-{i}" for i in range(cells.n_obs)]
        return cells


@pytest.fixture
def oracle(monkeypatch):
    _, split, _, test = demo.load_data(0)
    model = _Oracle(test)
    seen = {}

    def fake_fit(adata, condition_key, **kwargs):
        seen.update(kwargs, condition_key=condition_key, n_obs=adata.n_obs,
                    conditions=set(adata.obs[condition_key]))
        return model

    def fake_reflow(fitted, **kwargs):
        assert fitted is model
        seen["reflow"] = kwargs
        return model

    monkeypatch.setattr(scdit.api, "fit", fake_fit)
    monkeypatch.setattr(scdit.api, "reflow", fake_reflow)
    return model, seen, split


def test_demo_smoke(oracle, tmp_path, capsys, monkeypatch):
    model, seen, split = oracle
    # the joint UMAP is drawn by the real pipeline in the slow end-to-end test and the
    # tutorials; here a stand-in saves its figure (numba compiling UMAP is ~40 s per process)
    drawn = []

    def fake_embedding(real, pred, condition_key, *, seed, save):
        import matplotlib.pyplot as plt

        drawn.append((real.n_obs, pred.n_obs, condition_key, seed))
        fig, ax = plt.subplots()
        fig.savefig(save)
        plt.close(fig)

    monkeypatch.setattr("scdit.plotting.embedding", fake_embedding)
    out = tmp_path / "report"
    assert demo.main(["--out", str(out), "--fast", "--seed", "0"]) == 0
    assert len(drawn) == 1 and drawn[0][2:] == ("perturbation", 0) and drawn[0][1] > 0
    for f in FILES:
        assert (out / f).is_file(), f
    # training side: controls in, held-out doubles out; fast settings passed to fit
    assert seen["preset"] == "tiny" and seen["max_steps"] == 100 and seen["control"] == "control"
    assert seen["reflow"] == {**demo.FAST_REFLOW, "seed": 0, "verbose": True}
    held = set(split.held_out_conditions)
    assert "control" in seen["conditions"] and not held & seen["conditions"]
    assert {c for c, _ in model.calls} == held
    # tidy metrics and the wide summary
    df = pd.read_csv(out / "metrics.csv")
    assert list(df.columns) == ["method", "condition", "covariate", "metric", "value"]
    assert {"scdit", "no_change", "mean", "additive"} <= set(df.method)
    assert set(df.condition) == held
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scdit"]["pearson_delta"] == pytest.approx(1.0)
    assert summary["no_change"]["pearson_delta"] is None  # NaN → null, valid JSON
    wide = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(wide.index)[0] == "scdit" and {"no_change", "mean", "additive"} <= set(wide.index)
    report = (out / "report.md").read_text()
    assert "![delta scatter](delta_scatter.png)" in report and "## Wall time" in report
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["held_out"] == sorted(held) and run["seconds"]["total"] > 0
    printed = capsys.readouterr().out
    assert "pearson_delta" in printed and "additive" in printed and "wall time" in printed


def test_demo_fails_with_nonzero_exit(monkeypatch, tmp_path, capsys):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(scdit.api, "fit", broken_fit)
    assert demo.main(["--out", str(tmp_path), "--quiet"]) == 1
    assert "boom" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_fast_mode_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "scdit.demo", "--fast", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    for f in FILES[:-1]:
        assert (out / f).is_file(), f
    model = scdit.load(out / "model")
    assert model.summary["steps"] == 100 and model.summary["reflow"]["steps"] == 20
    assert "scdit" in res.stdout and "wall time" in res.stdout
