"""Perturbation features, control-cell source with OT pairing, doses, contexts (issue #4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scdit
from scdit.conditions import ConditionEncoder, data_features, feature_table, read_features
from scdit.data._dataset import CellDataset
from scdit.data._vocab import ConditionVocab, parse_doses
from scdit.train._module import group_ids, pair_within_groups

# ----------------------------------------------------------------------------- features


def test_read_features_forms(tmp_path):
    d = {"A": [1.0, 2.0], "B": [3.0, 4.0]}
    df = read_features(d)
    assert list(df.index) == ["A", "B"] and df.shape == (2, 2)
    path = tmp_path / "f.csv"
    df.to_csv(path)
    assert np.allclose(read_features(path).to_numpy(), df.to_numpy())
    assert np.allclose(read_features(str(path)).to_numpy(), df.to_numpy())
    with pytest.raises(ValueError, match="NaN"):
        read_features(pd.DataFrame({"x": [1.0, np.nan]}, index=["A", "B"]))
    with pytest.raises(ValueError, match="duplicated"):
        read_features(pd.DataFrame({"x": [1.0, 2.0]}, index=["A", "A"]))
    with pytest.raises(ValueError, match="numeric"):
        read_features(pd.DataFrame({"x": ["a", "b"]}, index=["A", "B"]))
    with pytest.raises(FileNotFoundError):
        read_features(tmp_path / "missing.csv")
    with pytest.raises(TypeError):
        read_features(3)


def test_feature_table_orders_seen_first_and_standardises():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 10.0], "y": [0.0, 0.0, 0.0, 1.0]},
                      index=["C", "A", "B", "Z"])
    table, featured, _ = feature_table(df, ["A", "B", "C"])
    assert featured == ["Z"]
    assert table.shape == (4, 2)
    assert np.allclose(table[:3, 0].mean(), 0.0, atol=1e-6)  # standardised on the seen rows
    assert np.allclose(table[:3, 1], 0.0)  # constant column: SD replaced by 1
    with pytest.raises(ValueError, match=r"no row for 1 perturbation.*\['Q'\]"):
        feature_table(df, ["A", "Q"])


def test_data_features_correlations(log1p_adata):
    X = log1p_adata.X
    f = data_features(X, log1p_adata.var_names, n_components=5)
    assert f.shape == (50, 7)
    assert list(f.index[:2]) == ["G0", "G1"]
    corr = f.filter(like="_corr").to_numpy()
    assert np.all(np.abs(corr) <= 1.0 + 1e-6)
    # genes of the same programme (G10..G14 go up together under G1) have similar profiles
    sim = np.corrcoef(corr[list(range(10, 15)) + list(range(40, 45))])
    within = sim[:5, :5][np.triu_indices(5, 1)].mean()
    between = np.abs(sim[:5, 5:]).mean()
    assert within > 0.6 and within > between + 0.3


def test_encoder_feature_only_rows_and_residual():
    feats = np.eye(4, 3, dtype=np.float32)  # 2 seen + 2 feature-only atoms
    enc = ConditionEncoder(2, [], 8, features=feats, residual_dropout=0.5).eval()
    atoms = torch.tensor([[1], [3], [0]])
    out = enc.member_embeddings(atoms)
    assert out.shape == (3, 1, 8)
    assert torch.all(out[2] == 0)  # padding
    # a feature-only atom has no residual: its embedding is the projection alone
    proj = enc.proj(enc.features[3])
    assert torch.allclose(out[1, 0], proj)
    c = enc(atoms)
    assert c.shape == (3, 8)


def test_vocab_featured_atoms():
    v = ConditionVocab.build(["ctrl", "A", "B"], "ctrl").with_featured(["B", "Z", "ctrl"])
    assert v.featured == ("Z",)
    assert v.encode(["Z"]).tolist() == [[3]]
    assert ConditionVocab.from_dict(v.to_dict()) == v
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['Q'\].*feature table"):
        v.encode(["Q"])


def test_unseen_single_perturbation_with_default_features(counts_adata, tiny):
    train = counts_adata[counts_adata.obs.condition != "G3"].copy()
    model = scdit.fit(train, "condition", max_steps=30, seed=0, **tiny)
    assert model.config.conditions.features == "data"
    assert "G3" in model.vocab.featured
    pred = model.predict("G3", n_cells=10, seed=0)
    assert pred.n_obs == 10 and (pred.obs.condition == "G3").all()
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['NOTAGENE'\]"):
        model.predict("NOTAGENE")


def test_unseen_perturbation_without_features_lists_them(counts_adata, tiny):
    train = counts_adata[counts_adata.obs.condition != "G3"].copy()
    model = scdit.fit(train, "condition", perturbation_features=False, max_steps=5, **tiny)
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['G3'\].*no perturbation "
                                       r"features"):
        model.predict(["G1", "G3"])


def test_user_feature_table(counts_adata, tiny, tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(4, 6)), index=["G1", "G2", "G3", "NEW"])
    model = scdit.fit(counts_adata, "condition", perturbation_features=table, max_steps=10,
                      **tiny)
    assert model.config.conditions.features == "table"
    assert model.vocab.featured == ("NEW",)
    a = model.predict("NEW", n_cells=8, seed=1)
    model.save(tmp_path / "m")
    b = scdit.load(tmp_path / "m").predict("NEW", n_cells=8, seed=1)
    assert np.array_equal(a.X.toarray(), b.X.toarray())
    with pytest.raises(ValueError, match=r"no row for 1 perturbation.*\['G3'\]"):
        scdit.fit(counts_adata, "condition", perturbation_features=table.drop("G3"), **tiny)
    bad = counts_adata.copy()
    bad.obs["condition"] = bad.obs["condition"].replace({"G3": "drugX"})
    with pytest.warns(UserWarning, match=r"1 seen perturbation\(s\) are not measured.*drugX"):
        m = scdit.fit(bad, "condition", perturbation_features="data", max_steps=2, **tiny)
    assert m.config.conditions.features == "data"
    drugs = counts_adata.copy()
    drugs.obs["condition"] = drugs.obs["condition"].replace(
        {"G1": "drugA", "G2": "drugB", "G3": "drugC", "G1+G2": "drugA+drugB"})
    with pytest.raises(ValueError, match="none of the 3 perturbation"):
        scdit.fit(drugs, "condition", perturbation_features="data", **tiny)


# ----------------------------------------------------------------------------- dose


def test_parse_doses_aligns_with_sorted_members():
    v = ConditionVocab.build(["ctrl", "B+A", "A"], "ctrl")
    d = parse_doses(["B+A", "A", "ctrl"], ["1+2", 5, 7], v, 2)
    # encode sorts members (A, B): "B+A" with "1+2" → A=2, B=1
    assert d.tolist() == [[2.0, 1.0], [5.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="non-numeric"):
        parse_doses(["A"], ["high"], v, 1)
    with pytest.raises(ValueError, match="does not fit"):
        parse_doses(["B+A"], ["1+2+3"], v, 2)


def test_fit_with_dose(counts_adata, tiny):
    adata = counts_adata.copy()
    adata.obs["dose"] = np.where(adata.obs.condition == "ctrl", 0.0,
                                 np.where(np.arange(adata.n_obs) % 2, 1.0, 10.0))
    model = scdit.fit(adata, "condition", dose_key="dose", max_steps=10, **tiny)
    assert model.field.encoder.dose is not None
    pred = model.predict("G1", n_cells=5, dose=10.0, seed=0)
    assert pred.n_obs == 5
    with pytest.raises(ValueError, match="pass dose="):
        model.predict("G1", n_cells=5)
    with pytest.raises(KeyError, match="dose_key 'nope'"):
        scdit.fit(adata, "condition", dose_key="nope", **tiny)


# ----------------------------------------------------------------------------- control source


def test_pair_within_groups_keeps_groups_and_lowers_cost():
    torch.manual_seed(0)
    x0 = torch.randn(12, 2, 3)
    x1 = torch.randn(12, 2, 3)
    batch = {"ctx": torch.tensor([0] * 6 + [1] * 6), "atoms": torch.tensor([[1]] * 12)}
    g = group_ids(batch)
    assert len(torch.unique(g)) == 2
    out = pair_within_groups(x0, x1, g)
    for grp in (slice(0, 6), slice(6, 12)):  # rows only move within their group
        a = sorted(map(tuple, x1[grp].reshape(6, -1).tolist()))
        b = sorted(map(tuple, out[grp].reshape(6, -1).tolist()))
        assert a == b
    cost = lambda y: ((x0 - y) ** 2).sum()  # noqa: E731
    assert cost(out) <= cost(x1) + 1e-6


def test_dataset_draws_source_from_same_context():
    X = np.arange(8, dtype=np.float32)[:, None].repeat(2, 1)
    src = np.array([[100.0, 100.0], [200.0, 200.0]], np.float32)
    ds = CellDataset(X, np.ones((8, 1)), np.zeros((8, 0)), context=np.array([0, 1] * 4),
                     source_X=src, source_context=np.array([0, 1]), seed=0)
    b = ds[list(range(8))]
    assert torch.all(b["x_src"][b["ctx"] == 0] == 100) and torch.all(b["x_src"][b["ctx"] == 1] == 200)
    with pytest.raises(ValueError, match="No source"):
        CellDataset(X, np.ones((8, 1)), np.zeros((8, 0)), context=np.array([0, 2] * 4),
                    source_X=src, source_context=np.array([0, 1]))


def test_control_source_transports_given_cells(counts_adata, tiny, tmp_path):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=20, seed=0, **tiny)
    assert model.config.flow.source == "control"
    ctrl = counts_adata[(counts_adata.obs.condition == "ctrl")
                        & (counts_adata.obs.cell_type == "B")][:15].copy()
    pred = model.predict("G1", source=ctrl, seed=2)
    assert pred.n_obs == 15
    assert list(pred.obs["reference_cell"]) == list(ctrl.obs_names)
    assert (pred.obs["cell_type"] == "B").all()
    again = model.predict("G1", source=ctrl, seed=2)
    assert np.array_equal(pred.X.toarray(), again.X.toarray())
    model.save(tmp_path / "m")
    loaded = scdit.load(tmp_path / "m")
    assert np.array_equal(loaded.predict("G1", source=ctrl, seed=2).X.toarray(), pred.X.toarray())
    # without source: stored control cells of the requested context
    p2 = model.predict("G2", n_cells=7, covariates={"cell_type": "T"}, seed=0)
    assert p2.n_obs == 7 and (p2.obs["cell_type"] == "T").all()
    # guidance scale 1 = the conditional model
    g1 = model.predict("G1", source=ctrl, seed=2, guidance_scale=1.0)
    assert np.array_equal(g1.X.toarray(), pred.X.toarray())


def test_control_source_needs_controls_in_every_context(counts_adata, tiny):
    bad = counts_adata[~((counts_adata.obs.condition == "ctrl")
                         & (counts_adata.obs.cell_type == "B"))].copy()
    with pytest.raises(ValueError, match=r"needs control cells.*'cell_type': 'B'"):
        scdit.fit(bad, "condition", covariate_keys=["cell_type"], source="control", **tiny)
    with pytest.raises(ValueError, match="source must be"):
        scdit.fit(counts_adata, "condition", source="controls", **tiny)


def test_unseen_covariate_value_is_a_clear_error(counts_model, counts_adata):
    src = counts_adata[:5].copy()
    src.obs["cell_type"] = "NK"
    with pytest.raises(KeyError, match=r"Unknown value\(s\) \['NK'\] for covariate 'cell_type'"):
        counts_model.predict("G1", source=src)


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


def test_target_prior_knocks_down_unseen_target(counts_adata, tiny):
    from scdit.conditions import target_prior
    from scdit.data._representation import counts_to_log1p

    train = counts_adata[counts_adata.obs.condition != "G3"].copy()
    prior = target_prior(counts_to_log1p(train.X), train.var_names, train.obs.condition, "ctrl")
    assert prior["n"] == 2  # G1, G2 are measured singles (G1+G2 is not a single)
    assert np.exp(prior["log_ratio"]) == pytest.approx(0.1, abs=0.08)  # simulated ×0.1
    model = scdit.fit(train, "condition", max_steps=10, seed=0, **tiny)
    ctrl = train[train.obs.condition == "ctrl"].copy()
    on = model.predict("G3", source=ctrl, seed=0)
    off = model.predict("G3", source=ctrl, seed=0, target_prior=False)
    j = list(train.var_names).index("G3")
    assert on.X[:, j].sum() < 0.4 * off.X[:, j].sum()
    others = [i for i in range(train.n_vars) if i != j]
    assert np.array_equal(on.X[:, others].toarray(), off.X[:, others].toarray())
    # seen perturbations are left to the model
    a = model.predict("G1", source=ctrl, seed=0)
    b = model.predict("G1", source=ctrl, seed=0, target_prior=False)
    assert np.array_equal(a.X.toarray(), b.X.toarray())


def test_control_source_drops_covariates_for_unseen_context(counts_adata, tiny):
    # hold out G1 in cell type B: (G1, B) never seen, (G1, T) seen
    train = counts_adata[~((counts_adata.obs.condition == "G1")
                           & (counts_adata.obs.cell_type == "B"))].copy()
    model = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=5, **tiny)
    assert model.config.conditions.covariate_dropout == 0.5
    cov = pd.DataFrame({"cell_type": ["B", "T"]})
    assert model._seen_in_context("G1", cov).tolist() == [False, True]
    assert model._seen_in_context("G2", cov).tolist() == [True, True]
    noise = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="noise",
                      max_steps=5, **tiny)
    assert noise.config.conditions.covariate_dropout == 0.0 and not noise._context_fallback()
    ctrl_b = train[(train.obs.condition == "ctrl") & (train.obs.cell_type == "B")][:5].copy()
    with pytest.raises(ValueError, match=r"anchor=True needs training cells of \['G1'\] in "
                                         r"context \{'cell_type': 'B'\}"):
        model.predict("G1", source=ctrl_b, anchor=True)
    with pytest.raises(ValueError, match=r"needs training cells of \['G1'\] in context"):
        model.predict("G1+G3", source=ctrl_b, anchor=True)  # member never seen in B
    assert model.predict("G2", source=ctrl_b, anchor=True, seed=0).n_obs == 5
    # control source: an unseen double of seen members is anchored by default
    auto = model.predict("G2+G3", source=ctrl_b, seed=0)
    np.testing.assert_array_equal(auto.X.toarray(),
                                  model.predict("G2+G3", source=ctrl_b, seed=0, anchor=True).X.toarray())
    assert not np.array_equal(auto.X.toarray(),
                              model.predict("G2+G3", source=ctrl_b, seed=0, anchor=False).X.toarray())


def test_source_auto_rule(counts_adata, tiny):
    with_cov = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], max_steps=2,
                         **tiny)
    assert with_cov.config.flow.source == "control"
    without = scdit.fit(counts_adata, "condition", max_steps=2, **tiny)
    assert without.config.flow.source == "noise"


# ----------------------------------------------------------------------------- context centring


def test_context_centres_hand_computed():
    from scdit._model import _context_centres

    tokens = torch.tensor([[[1.0]], [[3.0]], [[10.0]], [[20.0]]])  # (4, T=1, P=1)
    covs = torch.tensor([[1], [1], [2], [2]])
    assert _context_centres(tokens, covs).flatten().tolist() == [2.0, 2.0, 15.0, 15.0]
    assert _context_centres(tokens, torch.zeros((4, 0), dtype=torch.long)).flatten().tolist() \
        == [8.5] * 4


def test_context_means_per_context():
    from scdit.tokenizers._genes import GeneTokenizer
    from scdit.train._trainer import context_means

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    tok = GeneTokenizer(max_tokens=3).fit(X, [f"g{i}" for i in range(6)])
    src = rng.normal(size=(10, 6)).astype(np.float32) + np.arange(10)[:, None]
    sctx = np.array([0] * 4 + [2] * 6)
    ds = CellDataset(tok.prepare(X), np.ones((40, 1)), np.zeros((40, 0)),
                     context=np.array([0, 2] * 20), source_X=tok.prepare(src),
                     source_context=sctx)
    mu = context_means(tok, ds)
    enc = tok.encode(torch.as_tensor(tok.prepare(src)))
    assert mu.shape == (3, tok.n_tokens, tok.patch_size)
    assert torch.allclose(mu[0], enc[:4].mean(0), atol=1e-5)
    assert torch.allclose(mu[2], enc[4:].mean(0), atol=1e-5)
    assert torch.all(mu[1] == 0)


def test_centred_control_flow_is_translation_equivariant(counts_adata, tiny):
    """With centring, shifting every source cell by c shifts every output by c."""
    from scdit._config import FlowConfig

    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"],
                      flow=FlowConfig(source="control", center=True), max_steps=10, seed=0, **tiny)
    assert model.config.flow.center
    ctrl = counts_adata[(counts_adata.obs.condition == "ctrl")
                        & (counts_adata.obs.cell_type == "B")][:12].copy()
    tokens = model._encode_cells(model._check_source(ctrl, None))
    cov = ctrl.obs[["cell_type"]]
    shift = torch.linspace(-1, 1, tokens[0].numel()).view(tokens.shape[1:])
    a = model.sample("G1", 12, covariates=cov, source_tokens=tokens, output="tokens", seed=3)
    b = model.sample("G1", 12, covariates=cov, source_tokens=tokens + shift, output="tokens",
                     seed=3)
    assert np.allclose(b - a, shift.numpy()[None], atol=1e-4)


def test_centring_is_off_by_default_and_old_configs_load():
    from scdit._config import DataConfig, ScDiTConfig

    cfg = ScDiTConfig(data=DataConfig(condition_key="condition", control="ctrl"))
    assert cfg.flow.center is False
    d = cfg.to_dict()
    del d["flow"]["center"]  # saved before the option existed
    assert ScDiTConfig.from_dict(d).flow.center is False


def test_predict_log1p_output_of_a_counts_model(counts_model):
    from scdit.data._representation import detect_representation

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


def test_drift_calibration_invariants(counts_adata, tiny):
    """Under the control condition, 'cell' calibration returns the source cells and 'mean'
    calibration keeps each context's mean; a perturbation moves by its difference from control."""
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], source="control",
                      max_steps=10, seed=0, **tiny)
    ctrl = counts_adata[counts_adata.obs.condition == "ctrl"]
    ctrl = ctrl[np.r_[np.flatnonzero(ctrl.obs.cell_type == "B")[:6],
                      np.flatnonzero(ctrl.obs.cell_type == "T")[:6]]].copy()
    tokens = model._encode_cells(model._check_source(ctrl, None))
    cov = ctrl.obs[["cell_type"]]

    def run(label, mode):
        return torch.as_tensor(model.sample(label, 12, covariates=cov, source_tokens=tokens,
                                            output="tokens", seed=3, calibrate=mode))

    torch.testing.assert_close(run("ctrl", "cell"), tokens, atol=1e-5, rtol=0)
    for group in (slice(0, 6), slice(6, 12)):  # per context
        torch.testing.assert_close(run("ctrl", "mean")[group].mean(0), tokens[group].mean(0),
                                   atol=1e-5, rtol=0)
    plain, control = run("G1", None), run("ctrl", None)
    torch.testing.assert_close(run("G1", "cell"), tokens + plain - control, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="alternative corrections"):
        model.predict("G1", source=ctrl, calibrate="cell", anchor=True)
    pred = model.predict("G1", source=ctrl, seed=1, calibrate="mean")
    assert pred.shape == (12, counts_adata.n_vars) and pred.uns["scdit"]["calibrate"] == "mean"
    with pytest.raises(ValueError, match="calibrate must be None, 'mean' or 'cell'"):
        model.predict("G1", source=ctrl, calibrate="median")


def test_drift_calibration_needs_a_control_source(counts_model):
    with pytest.raises(ValueError, match="calibrate needs a model fitted with source='control'"):
        counts_model.predict("G1", n_cells=5, calibrate="mean")


# ----------------------------------------------------------------------------- anchoring


def _reference_token_mean(model, label: str, cell_type: str) -> torch.Tensor:
    """Mean token of the stored training cells of ``label`` in ``cell_type``, computed here."""
    obs = model.reference.obs
    rows = np.flatnonzero((obs.condition.astype(str) == label).to_numpy()
                          & (obs.cell_type.astype(str) == cell_type).to_numpy())
    return model._encode_cells(model.reference[rows]).double().mean(0)


def _decoded_target(model, token_mean: torch.Tensor) -> torch.Tensor:
    """log1p mean that a token mean ``(T, P)`` stands for: unclipped decode, then clipped at 0
    (anchoring matches the *decoded* mean of the output to this)."""
    tk = model.tokenizer
    u = token_mean.reshape(-1)[:tk.n_genes].double() * tk.std.double() + tk.mean.double()
    return u.clamp_min(0.0)


def _decoded_mean(model, tokens) -> torch.Tensor:
    return model.tokenizer.decode(torch.as_tensor(tokens).float()).double().mean(0)


def _assert_constant_shift(a: torch.Tensor, b: torch.Tensor) -> None:
    """``a - b`` is the same for every cell: the spread is the model's."""
    d = (torch.as_tensor(a) - torch.as_tensor(b)).double()
    torch.testing.assert_close(d - d.mean(0), torch.zeros_like(d), atol=1e-4, rtol=0)


def test_anchor_seen_perturbation_gets_its_training_mean(counts_model):
    for label in ("G1", "G1+G2", "ctrl"):  # seen single, seen combination, control
        cov = pd.DataFrame({"cell_type": ["T"] * 20 + ["B"] * 20})
        plain = torch.as_tensor(counts_model.sample(label, 40, covariates=cov, output="tokens",
                                                    seed=5))
        tok = torch.as_tensor(counts_model.sample(label, 40, covariates=cov, output="tokens",
                                                  seed=5, anchor=True))
        for rows, ct in ((slice(0, 20), "T"), (slice(20, 40), "B")):
            expected = _decoded_target(counts_model, _reference_token_mean(counts_model, label, ct))
            torch.testing.assert_close(_decoded_mean(counts_model, tok[rows]), expected,
                                       atol=1e-4, rtol=0)
            _assert_constant_shift(tok[rows], plain[rows])  # one shift per gene and context


def test_anchored_decoded_mean_survives_clipping(counts_model):
    """Clipping at 0 would raise the mean of lowly expressed genes; anchoring corrects for it."""
    tk = counts_model.tokenizer
    rng = torch.Generator().manual_seed(0)
    tokens = torch.randn((200, tk.n_tokens, tk.patch_size), generator=rng) * 2 - 1.0
    out = tk.match_decoded_mean(tokens)
    _assert_constant_shift(out, tokens)
    target = _decoded_target(counts_model, tokens.double().mean(0))
    assert (tk.decode(tokens).double().mean(0) - target).abs().max() > 0.05  # clipping bias
    torch.testing.assert_close(tk.decode(out).double().mean(0), target, atol=1e-4, rtol=0)


def test_anchor_unseen_combination_is_additive_with_optional_generated_interaction(counts_model):
    """Unseen A+B: anchor=True gives the additive mean from training means; anchor="interaction"
    adds the model's interaction (its A+B − A − B + control from the same noise)."""
    cov = {"cell_type": "T"}

    def gen(label, anchor=False):
        return torch.as_tensor(counts_model.sample(label, 30, covariates=cov, output="tokens",
                                                   seed=11, anchor=anchor)).double()

    ab, a, b, c = gen("G2+G3"), gen("G2"), gen("G3"), gen("ctrl")
    mu = {k: _reference_token_mean(counts_model, k, "T") for k in ("G2", "G3", "ctrl")}
    additive = mu["G2"] + mu["G3"] - mu["ctrl"]
    with_interaction = additive + ab.mean(0) - a.mean(0) - b.mean(0) + c.mean(0)
    for anchor, target in ((True, additive), ("interaction", with_interaction)):
        out = gen("G2+G3", anchor=anchor)
        torch.testing.assert_close(_decoded_mean(counts_model, out),
                                   _decoded_target(counts_model, target), atol=1e-4, rtol=0)
        _assert_constant_shift(out, ab)
    out = counts_model.predict("G3+G2", n_cells=8, covariates=cov, seed=0, anchor="interaction")
    assert out.shape[0] == 8 and out.uns["scdit"]["anchor"] == "interaction"
    assert np.isfinite(out.X.toarray()).all()
    with pytest.raises(ValueError, match="anchor must be None, True, False or 'interaction'"):
        gen("G2+G3", anchor="yes")



def _unmodelled_log1p(model, cells) -> tuple[np.ndarray, np.ndarray]:
    """Unmodelled columns of ``cells`` (counts) as log1p of each cell's whole library, and
    their indices, computed here."""
    cols = np.setdiff1d(np.arange(model.var_names.size), model.gene_index)
    X = cells.X.toarray() if sp.issparse(cells.X) else np.asarray(cells.X)
    lib = X.sum(1) if "_scdit_library_size" not in cells.obs else \
        cells.obs["_scdit_library_size"].to_numpy()
    return np.log1p(X[:, cols] / lib[:, None] * 1e4), cols


def test_anchor_covers_the_genes_outside_the_model(counts_model):
    """The 20 unmodelled genes (carried over from reference cells) get the anchored mean too:
    a seen label its training mean, an unseen combination the additive one; anchor=False
    leaves them as the reference cells have them."""
    ref = counts_model.reference
    assert counts_model.var_names.size - len(counts_model.gene_index) == 20

    def group(label):
        rows = ((ref.obs.condition.astype(str) == label) & (ref.obs.cell_type == "T")).to_numpy()
        return _unmodelled_log1p(counts_model, ref[rows])[0].mean(0)

    for label, target in (("G1", group("G1")),
                          ("G2+G3", group("G2") + group("G3") - group("ctrl"))):
        out = counts_model.predict(label, n_cells=60, covariates={"cell_type": "T"}, seed=2,
                                   anchor=True, representation="log1p")
        X = out.X.toarray()
        cols = np.setdiff1d(np.arange(out.n_vars), counts_model.gene_index)
        np.testing.assert_allclose(X[:, cols].mean(0), np.maximum(target, 0), atol=1e-4)
        assert X.min() >= 0
        plain = counts_model.predict(label, n_cells=60, covariates={"cell_type": "T"}, seed=2,
                                     anchor=False, representation="log1p").X.toarray()
        assert np.abs(plain[:, cols].mean(0) - np.maximum(target, 0)).max() > 1e-2
    # counts output: integers, the same mean up to the stochastic rounding
    out = counts_model.predict("G1", n_cells=400, covariates={"cell_type": "T"}, seed=2,
                               anchor=True)
    X = out.X.toarray()
    np.testing.assert_array_equal(X, np.round(X))
    # normalised by the libraries the counts were drawn for (the reference cells')
    out.obs["_scdit_library_size"] = ref.obs.loc[out.obs["reference_cell"],
                                                 "_scdit_library_size"].to_numpy()
    got = _unmodelled_log1p(counts_model, out)[0].mean(0)
    assert np.abs(got - group("G1")).max() < 0.25
    assert np.abs(got - group("G1")).mean() < 0.08

def test_anchor_default_is_on_for_unseen_combinations_only(counts_model):
    cov = {"cell_type": "B"}

    def tok(label, **kw):
        return counts_model.sample(label, 12, covariates=cov, output="tokens", seed=2, **kw)

    np.testing.assert_array_equal(tok("G2+G3"), tok("G2+G3", anchor=True))  # unseen: on
    assert not np.allclose(tok("G2+G3"), tok("G2+G3", anchor=False))
    np.testing.assert_array_equal(tok("G1+G2"), tok("G1+G2", anchor=False))  # seen: off
    np.testing.assert_array_equal(tok("G1"), tok("G1", anchor=False))
    assert counts_model.predict("G1", n_cells=3, seed=0).uns["scdit"]["anchor"] == "auto"


def test_auto_features_need_a_fifth_of_seen_perturbations_measured():
    from scdit._api import _resolve_features

    genes = [f"G{i}" for i in range(30)]

    def kind(labels):
        return _resolve_features(None, ConditionVocab.build(["ctrl", *labels], "ctrl"), genes)[1]

    drugs = [f"drug{i}" for i in range(8)]
    assert kind(["G1", "G2", *drugs]) == "data"  # 2 of 10 measured
    assert kind(["G1", "G2", *drugs, "drug8"]) == "none"  # 2 of 11 < 20 %
    assert kind(["G1", "drug0"]) == "none"  # one measured gene is not enough
    assert kind(["G1", "G2+G3", "drug0"]) == "data"  # members count (3 of 4)
