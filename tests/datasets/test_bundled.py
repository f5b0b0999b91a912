"""Bundled datasets, obs standardisation and the synthetic generator's ground truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdit import datasets as ds
from scdit.datasets._bundled import perturbation_targets, standardise_obs


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def group_means(adata: ad.AnnData) -> dict[tuple[str, str], np.ndarray]:
    """Mean log1p(normalize_total 1e4) expression of every (perturbation, cell type) group."""
    X = adata.X.toarray()
    logx = np.log1p(1e4 * X / X.sum(1, keepdims=True))
    groups = adata.obs.groupby(["perturbation", "cell_type"], observed=True).indices
    return {key: logx[idx].mean(0) for key, idx in groups.items()}


# ---------------------------------------------------------------- bundled


def test_norman19_devel():
    adata = ds.norman19_devel()
    assert adata.shape == (5961, 500)
    pert = adata.obs["perturbation"]
    assert pert.cat.categories[0] == "control" and pert.nunique() == 34
    assert sum("+" in str(p) for p in pert.cat.categories) == 15
    assert set(adata.obs["cell_type"]) == {"k562", "A172", "T98G", "U87MG"}
    assert "condition" in adata.obs and "perturbation_raw" in adata.obs  # originals kept
    info = adata.uns["scdit_dataset"]
    assert info["condition_key"] == "perturbation" and info["control"] == "control"
    assert info["covariate_keys"] == ["cell_type"] and info["representation"] == "log1p"
    assert info["license"] == "BSD-3-Clause" and "Norman" in info["citation"]


def test_glioblastoma_panobinostat():
    adata = ds.glioblastoma_panobinostat()
    assert adata.shape == (5000, 300)
    assert adata.obs["perturbation"].value_counts().to_dict() == {
        "control": 2500,
        "panobinostat": 2500,
    }
    assert set(adata.obs["condition"]) == {"ctrl", "panobinostat"}  # original kept
    assert (
        adata.obs["condition"].astype(str).eq("ctrl")
        == adata.obs["perturbation"].astype(str).eq("control")
    ).all()
    info = adata.uns["scdit_dataset"]
    assert info["covariate_keys"] == ["patient_id"] and info["representation"] == "counts"
    assert info["license"] == "MIT" and info["gene_symbols_key"] == "symbol"
    assert np.allclose(adata.X.data, np.round(adata.X.data))


def test_papalexi21_thp1():
    adata = ds.papalexi21_thp1()
    assert adata.shape == (20729, 299)
    counts = adata.obs["perturbation"].value_counts()
    assert counts["control"] == 2386 and len(counts) == 26
    measured = sorted(set(adata.obs["perturbation"].astype(str)) & set(adata.var_names))
    assert measured == ["CMTM6", "IFNGR2", "JAK2", "NFKBIA", "STAT1", "STAT2", "STAT3",
                        "TNFRSF14", "UBE2L6"]
    assert (adata.obs["grna_umi"] > 0).all()
    info = adata.uns["scdit_dataset"]
    assert info["representation"] == "counts" and info["license"] == "MIT"
    assert info["covariate_keys"] == [] and "Papalexi" in info["citation"]
    assert np.allclose(adata.X.data, np.round(adata.X.data))
    assert ds.load("papalexi21_thp1").shape == adata.shape  # by alias


def test_bundled_returns_fresh_copies_and_round_trips(tmp_path):
    a, b = ds.norman19_devel(), ds.norman19_devel()
    a.obs["perturbation"] = "x"
    a.X.data[:] = 0
    assert b.obs["perturbation"].iloc[0] != "x" and b.X.data.max() > 0
    for fn in (ds.norman19_devel, ds.glioblastoma_panobinostat, ds.papalexi21_thp1):
        adata = fn()
        adata.write_h5ad(tmp_path / "x.h5ad")
        back = ad.read_h5ad(tmp_path / "x.h5ad")
        assert back.uns["scdit_dataset"]["name"] == adata.uns["scdit_dataset"]["name"]


def test_load_bundled_by_name_and_preprocess():
    glio = ds.load("zhao21", preprocess=True)
    assert glio.n_vars == 300 and "counts" in glio.layers
    assert glio.uns["scdit_dataset"]["representation"] == "log1p"
    assert not glio.var["perturbation_target"].any()  # a drug has no target gene
    norman = ds.load("norman19_devel", preprocess=True, n_top_genes=100)
    targets = set(perturbation_targets(norman, ds.get_card("norman19_devel")))
    assert targets and targets <= set(norman.var_names)
    assert norman.var["perturbation_target"].sum() == len(targets)
    assert norman.n_vars >= 100 and "counts" not in norman.layers  # already log1p


def test_standardise_obs_from_card_mapping():
    obs = pd.DataFrame(
        {
            "perturbation": ["NT", "NT2", "A_B", "A", "B"],
            "line": list("xxyyy"),
            "conc": [0.0, 0.0, 1.0, 1.0, 10.0],
        }
    )
    adata = ad.AnnData(X=np.zeros((5, 2), np.float32), obs=obs.set_axis([str(i) for i in range(5)]))
    card = ds.get_card("norman19")
    card["obs_mapping"].update(
        control=["NT", "NT2"], cell_type="line", dose="conc", covariates=["line", "batch"]
    )
    with pytest.warns(UserWarning, match="covariate 'batch' not in obs"):
        standardise_obs(adata, card)
    assert adata.obs["perturbation"].tolist() == ["control", "control", "A+B", "A", "B"]
    assert adata.obs["perturbation_original"].tolist() == ["NT", "NT2", "A_B", "A", "B"]
    assert adata.obs["cell_type"].tolist() == list("xxyyy")
    assert adata.obs["dose"].tolist() == [0.0, 0.0, 1.0, 1.0, 10.0]
    assert adata.uns["scdit_dataset"]["covariate_keys"] == ["line"]
    card["obs_mapping"]["condition"] = "guide"
    with pytest.raises(KeyError, match="condition column 'guide' not in obs"):
        standardise_obs(adata, card)


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_counts_and_metadata():
    adata, truth = ds.synthetic_perturbation(
        n_genes=50, n_perturbations=4, n_combinations=3, n_cells_per_condition=20, n_control=30
    )
    n_conditions = 1 + 4 + 3
    assert adata.shape == (2 * (30 + 7 * 20), 50)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() >= 0
    assert list(adata.obs.columns) == ["perturbation", "cell_type", "library_size", "n_counts"]
    assert adata.obs["perturbation"].cat.categories.tolist() == truth.conditions
    assert np.allclose(adata.obs["n_counts"], adata.X.sum(1).A1)
    assert np.allclose(adata.obs["library_size"], truth.library_size)
    assert truth.expected_log1p.shape == (n_conditions, 2, 50)
    assert np.allclose(np.exp(truth.log_proportions).sum(-1), 1.0)
    assert sum("+" in c for c in truth.conditions) == 3
    assert set(truth.targets.values()) == set(adata.var_names[adata.var["perturbation_target"]])
    assert truth.frame("lfc", "B").shape == (n_conditions, 50)
    assert adata.uns["scdit_dataset"]["representation"] == "counts"
    assert (
        ds.synthetic_perturbation(
            n_genes=20, n_perturbations=2, n_combinations=1, return_truth=False
        ).n_vars
        == 20
    )


def test_synthetic_is_deterministic():
    a, ta = ds.synthetic_perturbation(seed=3)
    b, tb = ds.synthetic_perturbation(seed=3)
    c, _ = ds.synthetic_perturbation(seed=4)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert np.array_equal(ta.expected_log1p, tb.expected_log1p)
    assert (a.X != c.X).nnz > 0


def test_synthetic_targets_are_hit_and_can_be_unmeasured():
    adata, truth = ds.synthetic_perturbation(seed=1)
    m = group_means(adata)
    for pert, gene in truth.targets.items():
        g = truth.genes.index(gene)
        true = truth.lfc[truth.index(pert), 0, g]
        seen = m[(pert, "A")][g] - m[("control", "A")][g]
        assert abs(true) > 1.5 and np.sign(seen) == np.sign(true)
    hidden, th = ds.synthetic_perturbation(target_genes_measured=False, seed=1)
    assert not set(th.targets.values()) & set(hidden.var_names)
    assert not hidden.var["perturbation_target"].any()


def test_synthetic_means_recover_ground_truth():
    adata, truth = ds.synthetic_perturbation(seed=1)
    m = group_means(adata)
    for c, cond in enumerate(truth.conditions):
        for k, ct in enumerate(truth.cell_types):
            exp = truth.expected_log1p[c, k]
            assert pearson(m[(cond, ct)], exp) > 0.98
            high = exp > 4  # Jensen's gap is small for well-expressed genes
            assert np.abs(m[(cond, ct)][high] - exp[high]).mean() < 0.3
            if cond != "control":
                assert (
                    pearson(m[(cond, ct)] - m[("control", ct)], exp - truth.expected_log1p[0, k])
                    > 0.9
                )


def _baseline_scores(interaction_scale: float) -> tuple[float, float]:
    adata, truth = ds.synthetic_perturbation(interaction_scale=interaction_scale, seed=1)
    m = group_means(adata)
    singles = [c for c in truth.conditions[1:] if "+" not in c]
    additive, mean = [], []
    for combo, (a, b) in truth.combinations.items():
        for ct in truth.cell_types:
            ctrl = m[("control", ct)]
            delta = m[(combo, ct)] - ctrl
            additive.append(pearson(m[(a, ct)] + m[(b, ct)] - 2 * ctrl, delta))
            mean.append(pearson(np.mean([m[(p, ct)] for p in singles], 0) - ctrl, delta))
    return float(np.mean(additive)), float(np.mean(mean))


def test_additive_baseline_degrades_with_interactions():
    scores = {s: _baseline_scores(s) for s in (0.0, 1.0, 2.0)}
    assert scores[0.0][0] > 0.9
    assert scores[0.0][0] > scores[1.0][0] > scores[2.0][0]
    assert scores[2.0][0] < 0.7
    for additive, mean in scores.values():
        assert mean < additive


def test_synthetic_rejects_impossible_requests():
    with pytest.raises(ValueError, match="possible pairs"):
        ds.synthetic_perturbation(n_perturbations=3, n_combinations=4)
    with pytest.raises(ValueError, match="more perturbations than genes"):
        ds.synthetic_perturbation(n_genes=5, n_perturbations=6, n_combinations=0)
