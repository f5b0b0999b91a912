"""ScDiT.predict / sample: representations, reference cells, source and covariates, seeds, solvers, combination order and composition."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import scdit
from tests.helpers import GENES, dense


def unmodelled(model) -> np.ndarray:
    return np.flatnonzero(~np.isin(np.asarray(model.var_names), list(model.tokenizer.genes)))


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


CARRY = scdit.SamplingConfig(unmodelled_genes="carry")


def test_unmodelled_genes_are_copied_from_reference_cells(counts_model):
    """With ``unmodelled_genes="carry"`` the generator alone copies the genes it does not model
    from the reference cells (by default it decodes them: tests/model/test_unmodelled.py)."""
    out = counts_model.predict("G2", n_cells=40, seed=1, effects="none", sampling=CARRY)
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


@pytest.fixture
def ctrl_source(counts_adata):
    ctrl = counts_adata[counts_adata.obs["condition"] == "ctrl"]
    return ctrl[:25].copy()


def test_predict_from_source_keeps_context(counts_model, ctrl_source):
    out = counts_model.predict("G2", source=ctrl_source, seed=0, effects="none", sampling=CARRY)
    assert out.n_obs == ctrl_source.n_obs
    assert out.obs["cell_type"].tolist() == ctrl_source.obs["cell_type"].tolist()
    assert out.obs["reference_cell"].tolist() == ctrl_source.obs_names.tolist()
    cols = unmodelled(counts_model)
    np.testing.assert_array_equal(dense(out.X)[:, cols], ctrl_source.X[:, cols])
    # source genes in another order are aligned to the training genes
    shuffled = ctrl_source[:, ctrl_source.var_names[::-1]].copy()
    again = counts_model.predict("G2", source=shuffled, seed=0, effects="none", sampling=CARRY)
    np.testing.assert_array_equal(dense(again.X), dense(out.X))
    decoded = counts_model.predict("G2", source=ctrl_source, seed=0, effects="none")
    again = counts_model.predict("G2", source=shuffled, seed=0, effects="none")
    np.testing.assert_array_equal(dense(again.X), dense(decoded.X))
    # by default a seen perturbation's training mean also moves the unmodelled genes
    default = counts_model.predict("G2", source=ctrl_source, seed=0)
    assert set(default.uns["scdit"]["mean_set_by"].values()) == {"seen"}
    assert not np.array_equal(dense(default.X)[:, cols], ctrl_source.X[:, cols])


def test_predict_from_source_resamples_for_more_cells(counts_model, ctrl_source):
    out = counts_model.predict("G2", source=ctrl_source, n_cells=60, seed=0, effects="none",
                               sampling=CARRY)
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


def test_predict_is_deterministic_given_seed(counts_model):
    a = counts_model.predict(["G1", "G3"], n_cells=25, seed=0)
    b = counts_model.predict(["G1", "G3"], n_cells=25, seed=0)
    assert np.array_equal(dense(a.X), dense(b.X)) and a.obs.equals(b.obs)
    c = counts_model.predict(["G1", "G3"], n_cells=25, seed=1)
    assert not np.array_equal(dense(a.X), dense(c.X))
    d = counts_model.predict(["G1", "G3"], n_cells=25, seed=0,
                             sampling=scdit.SamplingConfig(guidance_scale=3.0))
    assert not np.array_equal(dense(a.X), dense(d.X))
    assert d.uns["scdit"]["guidance_scale"] == 3.0


def test_combination_order_does_not_matter(counts_model):
    a = counts_model.predict("G1+G2", n_cells=20, seed=4)
    b = counts_model.predict("G2+G1", n_cells=20, seed=4)
    assert np.array_equal(dense(a.X), dense(b.X))


def test_solver_and_steps_are_used(log1p_model):
    base = log1p_model.sample("G2", 10, seed=0,
                              sampling=scdit.SamplingConfig(solver="euler", steps=2))
    other = log1p_model.sample("G2", 10, seed=0,
                               sampling=scdit.SamplingConfig(solver="rk4", steps=8))
    assert not np.array_equal(base, other)
    with pytest.raises(ValueError, match="Unknown solver"):
        log1p_model.sample("G2", 2, seed=0, sampling=scdit.SamplingConfig(solver="dopri"))


def test_predict_emits_no_warnings(counts_model, ctrl_source):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts_model.predict("G1", n_cells=50, seed=0)
        counts_model.predict("G1", source=ctrl_source, n_cells=60, seed=0)


def test_predict_log1p_output_of_a_counts_model(counts_model):
    from scdit.data import detect_representation

    counts = counts_model.predict("G1", n_cells=20, covariates={"cell_type": "B"}, seed=4)
    logs = counts_model.predict("G1", n_cells=20, covariates={"cell_type": "B"}, seed=4,
                                representation="log1p")
    assert detect_representation(counts.X) == "counts"
    assert detect_representation(logs.X) == "log1p" and logs.uns["scdit"]["representation"] == "log1p"
    # the same generated cells: modelled genes equal the decoded log1p, which the counts round
    gi = counts_model.gene_index
    L = logs.X.toarray()[:, gi]
    C = counts.X.toarray()[:, gi]
    lib = counts.X.toarray().sum(1)
    assert np.corrcoef(np.log1p(C / lib[:, None] * 1e4).ravel(), L.ravel())[0, 1] > 0.5
    with pytest.raises(ValueError, match="representation must be"):
        counts_model.predict("G1", n_cells=2, covariates={"cell_type": "B"}, representation="raw")


def test_predict_counts_from_a_log1p_model_is_refused(log1p_adata, tiny):
    model = scdit.fit(log1p_adata, "condition", max_steps=2, **tiny)
    with pytest.raises(ValueError, match="trained on log1p"):
        model.predict("G1", n_cells=2, representation="counts")


def test_compose_zero_equals_joint_and_auto_rules(counts_model):
    m = counts_model
    kw = dict(n_cells=20, covariates={"cell_type": "T"}, seed=3)
    joint = m.predict("G1+G2", sampling=scdit.SamplingConfig(compose=0.0), **kw)
    auto = m.predict("G1+G2", **kw)  # G1+G2 was seen in training → joint condition
    assert np.array_equal(joint.X.toarray(), auto.X.toarray())
    composed_pred = m.predict("G1+G2", sampling=scdit.SamplingConfig(compose=1.0), **kw)
    assert not np.array_equal(joint.X.toarray(), composed_pred.X.toarray())
    # unseen combination of seen singles → composition by default
    tokens = {w: m.sample("G3+G2", 8, covariates={"cell_type": "T"}, seed=1, output="tokens",
                          effects="none", sampling=scdit.SamplingConfig(compose=w))
              for w in (None, 1.0, 0.0)}
    np.testing.assert_array_equal(tokens[None], tokens[1.0])  # FlowConfig.compose = 1
    assert not np.array_equal(tokens[None], tokens[0.0])
    out = m.predict("G3+G2", **kw)
    assert out.n_obs == 20 and out.uns["scdit"]["compose"] == "auto"
