"""The benchmark runner, its report and the ``scdit benchmark`` command line."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from anndata import AnnData

from scdit.datasets import synthetic_perturbation
from scdit.evaluate import normalized_scores, summarize
from scdit.pipelines import benchmark, main, write_report
from scdit.splits import split_combinations, split_unseen_perturbations

BASE = ("no_change", "mean", "additive", "linear", "ceiling")


@pytest.fixture(scope="module")
def data() -> AnnData:
    return synthetic_perturbation(n_genes=40, n_perturbations=6, n_combinations=4,
                                  n_cells_per_condition=40, n_control=80, cell_types=("A",),
                                  seed=0, return_truth=False)


def _oracle(adata: AnnData, conditions, seed: int = 0) -> AnnData:
    """Real cells of the conditions, resampled: a near-perfect external prediction."""
    rng = np.random.default_rng(seed)
    keep = adata.obs["perturbation"].isin(list(conditions)).to_numpy()
    rows = rng.permutation(np.flatnonzero(keep))
    out = adata[rows].copy()
    out.obs = out.obs[["perturbation"]].copy()
    out.obs_names = [f"o{i}" for i in range(out.n_obs)]
    return out


def _control_copy(train: AnnData, conditions, source: AnnData) -> AnnData:
    """A no-change model as a callable method: the source cells relabelled."""
    parts = []
    for c in conditions:
        p = source.copy()
        p.obs = p.obs[["perturbation"]].copy()
        p.obs["perturbation"] = c
        parts.append(p)
    return ad.concat(parts, index_unique="-", keys=[str(i) for i in range(len(parts))])


def test_benchmark_ranks_external_file_beside_baselines(data, tmp_path):
    split = split_combinations(data, "perturbation", seen=2)
    held = split.held_out_conditions
    path = tmp_path / "oracle.h5ad"
    _oracle(data, held).write_h5ad(path)
    df = benchmark(data, "perturbation", split=split, baselines=BASE, seeds=(0, 1),
                   methods={"oracle": str(path), "copy": _control_copy})
    assert list(df.columns) == ["seed", "method", "condition", "covariate", "metric", "value"]
    assert set(df.seed) == {0, 1}
    assert list(dict.fromkeys(df.method)) == ["oracle", "copy", *BASE]
    assert set(df.condition) == set(held)
    s = summarize(df)
    assert s.loc["oracle", "pearson_delta"] > 0.95
    assert s.loc["oracle", "pearson_delta"] > s.loc["mean", "pearson_delta"]
    assert s.loc["oracle", "mse"] < s.loc["additive", "mse"] < s.loc["no_change", "mse"]
    assert s.loc["copy", "mse"] == pytest.approx(s.loc["no_change", "mse"], rel=1e-6)
    n = normalized_scores(df)
    assert n.loc["oracle", "pearson_delta"] > 0.5 > n.loc["copy", "mse"]
    assert "split" in df.attrs["settings"]


def test_report_files(data, tmp_path):
    split = split_unseen_perturbations(data, "perturbation", fraction=0.4, seed=1)
    split.to_json(tmp_path / "split.json")
    held = split.held_out_conditions
    pred = _oracle(data, held, seed=2)
    out = tmp_path / "report"
    df = benchmark(data, "perturbation", split=tmp_path / "split.json", baselines=BASE,
                   methods={"oracle": pred}, out=out)
    for name in ("metrics.csv", "summary.csv", "report.md", "report.html", "normalized.csv",
                 "metrics.png", "delta_oracle.png", "embedding_oracle.png"):
        assert (out / name).is_file(), name
    text = (out / "report.html").read_text()
    assert text.count("<img src='data:image/png;base64,") == 3
    assert "Normalised scores" in (out / "report.md").read_text()
    # write_report alone, without predictions or a ceiling
    paths = write_report(df[df.method != "ceiling"], tmp_path / "r2")
    assert "normalized" not in paths and paths["html"].is_file()
    assert "<img" in paths["html"].read_text()


def test_benchmark_errors(data):
    with pytest.raises(ValueError, match="clash"):
        benchmark(data, "perturbation", split="unseen_perturbations", methods={"mean": data})
    with pytest.raises(ValueError, match="split must be"):
        benchmark(data, "perturbation", split="no_such_split", methods={"x": data})
    with pytest.raises(FileNotFoundError):
        benchmark(data, "perturbation", split="unseen_perturbations", baselines=(),
                  methods={"x": "missing.h5ad"})


def test_benchmark_fits_scdit(data):
    df = benchmark(data, "perturbation", split="combinations", split_params={"seen": 2},
                   methods={"scdit": "scdit"}, baselines=("mean",), n_cells=20,
                   fit_kwargs={"preset": "tiny", "max_steps": 4,
                               "train": {"batch_size": 64, "calibrate_guidance": False}})
    assert list(dict.fromkeys(df.method)) == ["scdit", "mean"]
    assert df[df.method == "scdit"].value.notna().any()


def test_cli_end_to_end(data, tmp_path, capsys):
    data_path = tmp_path / "data.h5ad"
    data.write_h5ad(data_path)
    split = split_combinations(data, "perturbation", seen=2)
    split.to_json(tmp_path / "split.json")
    _oracle(data, split.held_out_conditions).write_h5ad(tmp_path / "oracle.h5ad")
    out = tmp_path / "cli"
    rc = main(["benchmark", "--data", str(data_path), "--condition-key", "perturbation",
               "--split", str(tmp_path / "split.json"), "--pred",
               f"oracle={tmp_path / 'oracle.h5ad'}", "--baselines", "no_change,mean,ceiling",
               "--out", str(out)])
    assert rc == 0
    assert "oracle" in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "metrics.csv").is_file()
    # a config file (JSON) with a split kind and relative paths
    cfg = {"data": "data.h5ad", "condition_key": "perturbation",
           "split": {"kind": "unseen_perturbations", "fraction": 0.3},
           "methods": {"oracle": "oracle.h5ad"}, "baselines": ["mean", "ceiling"],
           "seeds": [0, 1], "out": "cfg_out"}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["benchmark", "--config", str(tmp_path / "cfg.json")]) == 0
    assert (tmp_path / "cfg_out" / "summary.csv").is_file()
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", str(data_path)])
