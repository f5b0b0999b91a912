"""End-to-end behaviour of ``scdit.fit`` / ``ScDiT.predict`` / ``save`` / ``scdit.load``."""

from __future__ import annotations

import json
import logging
import struct
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scdit

GENES = [f"G{j}" for j in range(50)]


def dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def unmodelled(model) -> np.ndarray:
    return np.flatnonzero(~np.isin(np.asarray(model.var_names), list(model.tokenizer.genes)))


# ---------------------------------------------------------------- fitted model
def test_fit_summary(counts_model):
    m = counts_model
    assert m.representation == "counts" and m.condition_key == "condition"
    assert m.vocab.control == "ctrl" and m.vocab.atoms == ("G1", "G2", "G3")
    assert list(m.var_names) == GENES
    assert m.tokenizer.n_genes == 30 and {"G1", "G2", "G3"} <= set(m.tokenizer.genes)
    assert m.tokenizer.n_tokens <= 8  # tiny preset token budget
    assert m.summary["steps"] == 40 and m.summary["n_modelled_genes"] == 30
    assert m.covariates.keys == ("cell_type",)
    assert "3 perturbations" in repr(m)


# ---------------------------------------------------------------- representation
def test_predict_counts_are_integers_in_training_genes(counts_model):
    out = counts_model.predict(["G1", "G1+G2"], n_cells=30, seed=0)
    X = dense(out.X)
    assert out.shape == (60, 50) and list(out.var_names) == GENES
    assert np.all(X >= 0) and np.array_equal(X, np.round(X)) and X.sum() > 0
    assert out.obs["condition"].tolist() == ["G1"] * 30 + ["G1+G2"] * 30
    assert set(out.obs["cell_type"]) <= {"T", "B"}
    assert out.obs_names.is_unique
    assert set(out.obs["reference_cell"]) <= set(counts_model.reference.obs_names)
    assert out.uns["scdit"]["representation"] == "counts"


def test_unmodelled_genes_are_copied_from_reference_cells(counts_model):
    out = counts_model.predict("G2", n_cells=40, seed=1)
    ref = counts_model.reference[out.obs["reference_cell"].to_numpy()]
    X, R = dense(out.X), dense(ref.X)
    cols = unmodelled(counts_model)
    assert len(cols) == 20
    np.testing.assert_array_equal(X[:, cols], R[:, cols])
    modelled = counts_model.var_names.get_indexer(list(counts_model.tokenizer.genes))
    assert not np.array_equal(X[:, modelled], R[:, modelled])  # modelled genes are generated
    # reference cells carry the perturbation and the covariates of the generated cells
    assert set(ref.obs["condition"]) == {"G2"}
    assert out.obs["cell_type"].tolist() == ref.obs["cell_type"].tolist()


def test_predict_log1p_in_log1p_out(log1p_model):
    assert log1p_model.representation == "log1p"
    out = log1p_model.predict("G3", n_cells=40, seed=1)
    X = dense(out.X)
    assert out.shape == (40, 50) and list(out.var_names) == GENES
    assert np.all(X >= 0) and np.all(np.isfinite(X))
    assert not np.array_equal(X, np.round(X))  # floats, not counts
    assert X.max() < 15  # log scale
    assert out.uns["scdit"]["representation"] == "log1p"
    assert "cell_type" not in out.obs


def test_sample_returns_modelled_log1p(log1p_model):
    a = log1p_model.sample("G1", 17, seed=5)
    b = log1p_model.sample("G1", 17, seed=5)
    assert a.shape == (17, log1p_model.tokenizer.n_genes) and np.all(a >= 0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, log1p_model.sample("G1", 17, seed=6))


# ---------------------------------------------------------------- source= and covariates=
@pytest.fixture
def ctrl_source(counts_adata):
    ctrl = counts_adata[counts_adata.obs["condition"] == "ctrl"]
    return ctrl[:25].copy()


def test_predict_from_source_keeps_context(counts_model, ctrl_source):
    out = counts_model.predict("G2", source=ctrl_source, seed=0)
    assert out.n_obs == ctrl_source.n_obs
    assert out.obs["cell_type"].tolist() == ctrl_source.obs["cell_type"].tolist()
    assert out.obs["reference_cell"].tolist() == ctrl_source.obs_names.tolist()
    cols = unmodelled(counts_model)
    np.testing.assert_array_equal(dense(out.X)[:, cols], ctrl_source.X[:, cols])
    # source genes in another order are aligned to the training genes
    shuffled = ctrl_source[:, ctrl_source.var_names[::-1]].copy()
    again = counts_model.predict("G2", source=shuffled, seed=0)
    np.testing.assert_array_equal(dense(again.X), dense(out.X))


def test_predict_from_source_resamples_for_more_cells(counts_model, ctrl_source):
    out = counts_model.predict("G2", source=ctrl_source, n_cells=60, seed=0)
    assert out.n_obs == 60
    refs = out.obs["reference_cell"].to_numpy()
    assert set(refs) <= set(ctrl_source.obs_names) and len(set(refs)) < 60
    expected = ctrl_source.obs.loc[refs, "cell_type"].tolist()
    assert out.obs["cell_type"].tolist() == expected
    cols = unmodelled(counts_model)
    np.testing.assert_array_equal(dense(out.X)[:, cols], ctrl_source[refs].X[:, cols])


def test_predict_with_covariates(counts_model):
    out = counts_model.predict("G1", n_cells=20, covariates={"cell_type": "B"}, seed=0)
    assert set(out.obs["cell_type"]) == {"B"}
    ref = counts_model.reference[out.obs["reference_cell"].to_numpy()]
    assert set(ref.obs["cell_type"]) == {"B"} and set(ref.obs["condition"]) == {"G1"}


def test_unseen_combination_of_seen_atoms_uses_control_references(counts_model):
    out = counts_model.predict("G3+G2", n_cells=10, seed=0)
    assert out.n_obs == 10 and set(out.obs["condition"]) == {"G3+G2"}
    ref = counts_model.reference[out.obs["reference_cell"].to_numpy()]
    assert set(ref.obs["condition"]) == {"ctrl"}


# ---------------------------------------------------------------- determinism and guidance
def test_predict_is_deterministic_given_seed(counts_model):
    a = counts_model.predict(["G1", "G3"], n_cells=25, guidance_scale=1.0, seed=0)
    b = counts_model.predict(["G1", "G3"], n_cells=25, guidance_scale=1.0, seed=0)
    assert np.array_equal(dense(a.X), dense(b.X)) and a.obs.equals(b.obs)
    c = counts_model.predict(["G1", "G3"], n_cells=25, guidance_scale=1.0, seed=1)
    assert not np.array_equal(dense(a.X), dense(c.X))
    d = counts_model.predict(["G1", "G3"], n_cells=25, guidance_scale=3.0, seed=0)
    assert not np.array_equal(dense(a.X), dense(d.X))
    assert d.uns["scdit"]["guidance_scale"] == 3.0


def test_combination_order_does_not_matter(counts_model):
    a = counts_model.predict("G1+G2", n_cells=20, seed=4)
    b = counts_model.predict("G2+G1", n_cells=20, seed=4)
    assert np.array_equal(dense(a.X), dense(b.X))


def test_solver_and_steps_are_used(log1p_model):
    base = log1p_model.sample("G2", 10, seed=0, solver="euler", steps=2)
    other = log1p_model.sample("G2", 10, seed=0, solver="rk4", steps=8)
    assert not np.array_equal(base, other)
    with pytest.raises(ValueError, match="Unknown solver"):
        log1p_model.sample("G2", 2, seed=0, solver="dopri")


def test_predict_emits_no_warnings(counts_model, ctrl_source):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts_model.predict("G1", n_cells=50, seed=0)
        counts_model.predict("G1", source=ctrl_source, n_cells=60, seed=0)


# ---------------------------------------------------------------- save / load
def _assert_no_pickle(path):
    for f in path.iterdir():
        head = f.read_bytes()[:4]
        assert not head.startswith(b"\x80"), f"{f.name} looks like a pickle"
        assert not head.startswith(b"PK"), f"{f.name} looks like a torch.save zip"


def test_save_load_round_trip(counts_model, tmp_path):
    before = counts_model.predict(["G1", "G1+G2"], n_cells=20, seed=3)
    path = counts_model.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors",
                                                      "reference.h5ad"]
    _assert_no_pickle(path)
    meta = json.loads((path / "config.json").read_text())
    assert meta["config"]["data"]["condition_key"] == "condition"
    assert meta["var_names"] == GENES
    raw = (path / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])  # safetensors: a JSON header, then raw tensor bytes
    assert any(k.startswith("field.") for k in header)

    loaded = scdit.load(path)
    assert loaded.config == counts_model.config
    assert loaded.vocab == counts_model.vocab and loaded.covariates == counts_model.covariates
    assert loaded.tokenizer.genes == counts_model.tokenizer.genes
    sd0, sd1 = counts_model.field.state_dict(), loaded.field.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    after = loaded.predict(["G1", "G1+G2"], n_cells=20, seed=3)
    assert np.array_equal(dense(before.X), dense(after.X))
    assert before.obs.equals(after.obs)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        counts_model.save(path)
    counts_model.save(path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="config.json"):
        scdit.load(tmp_path / "nothing")


def test_save_load_log1p_model_without_covariates(log1p_model, tmp_path):
    before = log1p_model.predict("G3", n_cells=15, seed=2)
    loaded = scdit.load(log1p_model.save(tmp_path / "m"))
    after = loaded.predict("G3", n_cells=15, seed=2)
    assert np.array_equal(dense(before.X), dense(after.X))


# ---------------------------------------------------------------- training determinism
@pytest.fixture
def small_adata(make_adata):
    return make_adata(seed=2, conditions={"ctrl": 60, "G1": 40, "G2": 40, "G1+G2": 40})


def _weights(model):
    return {k: v.clone() for k, v in model.field.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_same_seed_gives_identical_weights(small_adata, tiny):
    adata = small_adata
    torch.manual_seed(123)
    a = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    torch.manual_seed(456)  # unrelated global RNG use between fits must not matter
    b = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    assert _same(_weights(a), _weights(b))


def test_fit_is_deterministic_once_global_rng_is_fixed(small_adata, tiny):
    """Training itself (batches, noise, times, dropout) is seeded: only the init leaks."""
    adata = small_adata
    torch.manual_seed(7)
    a = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    torch.manual_seed(7)
    b = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    assert _same(_weights(a), _weights(b))
    assert np.array_equal(dense(a.predict("G1", n_cells=10, seed=0).X),
                          dense(b.predict("G1", n_cells=10, seed=0).X))
    torch.manual_seed(7)
    c = scdit.fit(adata, "condition", max_steps=8, seed=1, **tiny)
    assert not _same(_weights(a), _weights(c))


def test_fit_verbose_false_is_silent(caplog, capsys, small_adata, tiny):
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scdit.fit(small_adata, "condition", max_steps=2, seed=0, **tiny)
    chatter = [r.getMessage() for r in caplog.records
               if r.name.startswith("lightning") and r.levelno < logging.WARNING]
    chatter += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert chatter == []
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- learning (slow)
@pytest.mark.slow
def test_model_learns_perturbation_effects(counts_adata, tiny):
    """Each single up-regulates its own 5-gene block ×4 and knocks its target down ×0.1."""
    model = scdit.fit(counts_adata, "condition", max_steps=600, seed=0, **tiny)

    def mean(label, genes):
        cols = model.var_names.get_indexer(genes)
        return dense(model.predict(label, n_cells=200, seed=0).X)[:, cols].mean()

    b1, b2 = [f"G{j}" for j in range(10, 15)], [f"G{j}" for j in range(15, 20)]
    ctrl1, ctrl2 = mean("ctrl", b1), mean("ctrl", b2)
    assert mean("G1", b1) > 2 * ctrl1 and mean("G1", b1) > 2 * mean("G3", b1)
    assert mean("G2", b2) > 2 * ctrl2 and mean("G2", b2) > mean("G2", b1)
    assert mean("G1+G2", b1) > 2 * ctrl1 and mean("G1+G2", b2) > 2 * ctrl2
    assert mean("G1", ["G1"]) < 0.5 * mean("ctrl", ["G1"])
