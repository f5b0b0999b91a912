"""Unseen perturbations through perturbation features (data-derived or a user table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scdit
from scdit.data import ConditionVocab


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
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['drugZ'\].*no perturbation "
                                       r"features"):
        model.predict(["G1", "drugZ"])


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


def test_auto_features_need_one_measured_seen_perturbation():
    from scdit._fit_inputs import resolve_features as _resolve_features

    genes = [f"G{i}" for i in range(30)]

    def kind(labels):
        return _resolve_features(None, ConditionVocab.build(["ctrl", *labels], "ctrl"), genes)[1]

    drugs = [f"drug{i}" for i in range(30)]
    assert kind(["G1", *drugs]) == "data"  # 1 of 31 measured: whatever the share
    assert kind(["G1", "drug0"]) == "data"
    assert kind(["drug1+G2", "drug0"]) == "data"  # members count
    assert kind(drugs) == "none"  # nothing for the feature projection to learn from


def _few_measured(counts_adata):
    """G1 and 11 seen knock-outs of unmeasured genes (1 of 12 measured); no G3 cells."""
    a = counts_adata.copy()
    labels = a.obs.condition.astype(str).to_numpy()
    other = np.flatnonzero(~np.isin(labels, ["ctrl", "G1"]))
    labels[other] = [f"KO{i % 11}" for i in range(len(other))]  # 11 unmeasured, 16-17 cells
    a.obs["condition"] = labels
    return a


def test_few_measured_targets_still_predict_unseen_measured_genes(counts_adata, tiny):
    model = scdit.fit(_few_measured(counts_adata), "condition", max_steps=10, seed=0, **tiny)
    assert model.config.conditions.features == "data"
    assert {"G3", "G49"} <= set(model.vocab.featured)
    pred = model.predict(["G3", "KO4", "G1+G3"], n_cells=6, seed=0)
    assert pred.obs.condition.tolist() == ["G3"] * 6 + ["KO4"] * 6 + ["G1+G3"] * 6
    assert pred.uns["scdit"]["mean_set_by"]["G3"] == "generator"
    with pytest.raises(KeyError, match=r"Unknown perturbation\(s\) \['KO99'\]: not seen in "
                                       r"training, and it is not a measured gene.*50 genes.*"
                                       r"perturbation_features=<table"):
        model.predict(["G3", "KO99"])
    with pytest.raises(KeyError, match=r"\['g3'\].*did you mean \['G3'\]"):
        model.sample("g3", n_cells=2)


def test_unseen_measured_gene_without_any_measured_seen_target(log1p_adata, tiny):
    """No seen target is a measured gene, so no features: a measured gene is still predicted,
    as a typical perturbation (the mean baseline's mean), with a warning saying so."""
    a = log1p_adata.copy()
    labels = a.obs.condition.astype(str).to_numpy()
    a.obs["condition"] = ["ctrl" if lab == "ctrl" else "+".join(f"KO_{m}" for m in lab.split("+"))
                          for lab in labels]
    model = scdit.fit(a, "condition", max_steps=5, seed=0, **tiny)
    assert model.config.conditions.features == "none"
    src = a[a.obs.condition == "ctrl"].copy()
    with pytest.warns(UserWarning, match=r"\['G3'\]: not seen in training.*no perturbation "
                                         r"features.*typical training perturbation"):
        pred = model.predict("G3", source=src, seed=0)
    assert pred.obs.condition.tolist() == ["G3"] * src.n_obs
    assert pred.uns["scdit"]["mean_set_by"] == {"G3": "typical"}
    # its mean: the average of the perturbations' training means (each once), as the mean
    # baseline of scdit.evaluate, up to the clipping at 0
    X = a.X.toarray()
    pert = [lab for lab in np.unique(a.obs.condition) if lab != "ctrl"]
    target = np.mean([X[(a.obs.condition == lab).to_numpy()].mean(0) for lab in pert], axis=0)
    got = pred.X.toarray().mean(0)
    assert np.abs(got - target).max() < 1e-3
    assert np.corrcoef(got - X[labels == "ctrl"].mean(0), target - X[labels == "ctrl"].mean(0)
                       )[0, 1] > 0.99
    with pytest.warns(UserWarning, match="typical"):
        alone = model.predict("G3", source=src, seed=0, effects="none")
    assert alone.uns["scdit"]["mean_set_by"] == {"G3": "generator"}
    # nothing is integrated: the cells are the source cells, each gene's expression scaled
    # by one factor (log1p output): zeros stay zeros, the mean is the estimate's
    np.testing.assert_allclose(alone.X.toarray(), src.X.toarray(), atol=1e-4)
    P, S = pred.X.toarray().astype(np.float64), src.X.toarray().astype(np.float64)
    some = S.any(0)  # a gene no source cell expresses is lifted by a shift instead
    assert np.all(P[:, some][S[:, some] == 0] == 0)
    expressed = S > 0.5
    ratio = np.where(expressed, np.expm1(P) / np.where(expressed, np.expm1(S), 1.0), np.nan)
    used = expressed.sum(0) >= 2
    assert used.sum() > 10
    spread = np.nanmax(ratio[:, used], 0) / np.nanmin(ratio[:, used], 0)
    assert spread.max() < 1.01 and np.ptp(np.nanmedian(ratio[:, used], 0)) > 0.05
    with pytest.warns(UserWarning, match="typical") as rec:
        assert model.sample("G3", 3, seed=0).shape[0] == 3
    assert rec[0].filename == __file__  # the caller's line, not torch's no_grad wrapper
    with pytest.raises(KeyError, match=r"\['G3'\].*no perturbation features.*even a measured "
                                       r"gene such as 'G3'"):
        model.predict("G3+KO_G1")  # a combination has no typical effect


def test_unmeasured_targets_with_covariates_give_a_typical_effect_in_every_context(counts_adata,
                                                                                  tiny):
    """Cell type B has control cells only: a stand-in there gets B's control under the average
    effect of the other context; genes outside the model are carried over there."""
    a = counts_adata.copy()
    labels = a.obs.condition.astype(str).to_numpy()
    a.obs["condition"] = ["ctrl" if lab == "ctrl" else "+".join(f"KO_{m}" for m in lab.split("+"))
                          for lab in labels]
    a = a[(a.obs.condition == "ctrl").to_numpy() | (a.obs.cell_type == "T").to_numpy()].copy()
    model = scdit.fit(a, "condition", covariate_keys=["cell_type"], max_steps=5, seed=0,
                      tokenizer=scdit.TokenizerConfig(n_top_genes=30), **tiny)
    assert model.config.conditions.features == "none"
    src = a[(a.obs.condition == "ctrl").to_numpy()].copy()
    with pytest.warns(UserWarning, match="typical training perturbation"):
        pred = model.predict(["KO_G1", "G3"], source=src, seed=0, representation="log1p")
    by = pred.uns["scdit"]["mean_set_by"]
    assert by["G3 | B"] == by["G3 | T"] == "typical"
    assert by["KO_G1"] == "generator"  # B is a held-out context for it, with too few others
    log = scdit.data.to_log1p(a.X)
    ctrl_b = log[((a.obs.condition == "ctrl") & (a.obs.cell_type == "B")).to_numpy()].mean(0)
    ctrl_t = log[((a.obs.condition == "ctrl") & (a.obs.cell_type == "T")).to_numpy()].mean(0)
    pert = [lab for lab in np.unique(a.obs.condition) if lab != "ctrl"]
    effect = np.mean([log[(a.obs.condition == lab).to_numpy()].mean(0) for lab in pert], 0) - ctrl_t
    rows = ((pred.obs.condition == "G3") & (pred.obs.cell_type == "B")).to_numpy()
    got = pred.X[rows].toarray().mean(0) - ctrl_b
    modelled = np.isin(a.var_names, model.tokenizer.genes)
    assert np.corrcoef(got[modelled], effect[modelled])[0, 1] > 0.9
    assert np.abs(got[~modelled]).max() < 0.1  # carried over: no pooled effect for them
    with pytest.raises(KeyError, match=r"\['G3', 'drugZ'\].*Alone, an unseen measured gene is "
                                       r"predicted"):  # G3 as the combination's member
        model.predict(["G3", "drugZ", "G3+KO_G1"])


def test_unseen_label_guided_by_the_feature_reliability(counts_adata, tiny, tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(4, 6)), index=["G1", "G2", "G3", "NEW"])
    model = scdit.fit(counts_adata, "condition", perturbation_features=table, max_steps=10,
                      **tiny)
    rel = model.summary["feature_reliability"]
    assert rel["n"] == 3  # G1, G2, G3 are featured singles
    s = rel["scale"]
    assert 0.0 <= s < 1.0  # random features: no evidence that they place effects
    auto = model.predict(["NEW", "G1"], n_cells=12, seed=3)
    assert auto.uns["scdit"]["guidance_scale"] == "auto"
    seen = model.generator.seen_scale  # the scale of seen labels (1: tiny fits skip calibration)
    assert auto.uns["scdit"]["guidance"] == {k: v for k, v in (("NEW", s), ("G1", seen))
                                             if v != 1}
    fixed = model.predict(["NEW", "G1"], n_cells=12, seed=3,
                          sampling=scdit.SamplingConfig(guidance_scale=s))
    assert np.array_equal(auto.X.toarray()[:12], fixed.X.toarray()[:12])
    plain = model.predict(["NEW", "G1"], n_cells=12, seed=3,
                          sampling=scdit.SamplingConfig(guidance_scale=seen))
    assert np.array_equal(auto.X.toarray()[12:], plain.X.toarray()[12:])
    assert plain.uns["scdit"]["guidance"] == ({} if seen == 1 else {"NEW": seen, "G1": seen})
    other = 0.0 if s > 0.5 else 1.0
    moved, auto_log1p = (model.predict("NEW", n_cells=12, seed=3, representation="log1p",
                                       sampling=scdit.SamplingConfig(guidance_scale=g))
                         for g in (other, None))
    assert not np.array_equal(auto_log1p.X.toarray(), moved.X.toarray())
    model.save(tmp_path / "m")
    assert scdit.load(tmp_path / "m").summary["feature_reliability"] == rel
    # from given control cells, an unseen label's cells are their counterfactuals, also for
    # the generator alone; invert=False keeps noise starts
    ctrl = counts_adata[counts_adata.obs.condition == "ctrl"][:20].copy()
    for effects in ("auto", "none"):
        cf = model.predict("NEW", source=ctrl, seed=0, effects=effects,
                           representation="log1p")  # (counts: rounding draws)
        assert cf.uns["scdit"]["inverted"] == ["NEW"]
        again = model.predict("NEW", source=ctrl, seed=1, effects=effects,
                              representation="log1p")
        assert np.array_equal(cf.X.toarray(), again.X.toarray())  # no noise drawn
    noise = model.predict("NEW", source=ctrl, seed=0,
                          sampling=scdit.SamplingConfig(invert=False))
    assert noise.uns["scdit"]["inverted"] == []
    # without source: distinct stored control cells, inverted; the seen G1 keeps its own
    # stored cells as reference cells (library sizes) and is inverted from distinct stored
    # control cells, unless no estimate sets its mean; more cells than stored control cells:
    # noise starts
    assert auto.uns["scdit"]["inverted"] == ["NEW", "G1"]
    reference = model.cells.reference
    refs = auto.obs["reference_cell"].to_numpy()
    stored = reference.obs.loc[refs, "condition"].to_numpy()
    assert (stored[:12] == "ctrl").all() and len(set(refs[:12])) == 12
    assert (stored[12:] == "G1").all()
    assert model.predict("G1", n_cells=3, seed=0, effects="none").uns["scdit"]["inverted"] == []
    n_ctrl = int((reference.obs["condition"] == "ctrl").sum())
    every = model.predict("NEW", n_cells=n_ctrl, seed=0)  # each stored control cell once
    assert every.uns["scdit"]["inverted"] == ["NEW"]
    assert every.obs["reference_cell"].nunique() == n_ctrl
    given = model.predict("NEW", source=reference[refs[:12]].copy(), seed=5,
                          representation="log1p")
    assert np.array_equal(given.X.toarray(), auto_log1p.X.toarray())  # same counterfactuals
    many = model.predict("NEW", n_cells=n_ctrl + 1, seed=0)
    assert many.uns["scdit"]["inverted"] == [] and many.n_obs == n_ctrl + 1


def test_without_a_trained_null_branch_unseen_labels_keep_the_conditional_model(counts_adata,
                                                                                  tiny):
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(4, 6)), index=["G1", "G2", "G3", "NEW"])
    import dataclasses

    kw = {k: v for k, v in tiny.items() if k != "preset"}
    dit = dataclasses.replace(scdit.config.DIT_PRESETS["tiny"], cond_dropout=0.0)
    model = scdit.fit(counts_adata, "condition", perturbation_features=table, max_steps=5,
                      dit=dit, **kw)
    assert model.summary["feature_reliability"]["scale"] < 1  # no evidence from 3 targets
    out = model.predict("NEW", n_cells=6, seed=0)
    assert out.uns["scdit"]["guidance"] == {}  # the null branch was never trained: scale 1
    plain = model.predict("NEW", n_cells=6, seed=0,
                          sampling=scdit.SamplingConfig(guidance_scale=1.0))
    assert np.array_equal(out.X.toarray(), plain.X.toarray())


def test_unseen_label_without_source_inverts_only_its_own_contexts_control_cells(make_adata,
                                                                                  tiny):
    a = make_adata()
    a = a[~((a.obs.cell_type == "T") & (a.obs.condition == "ctrl"))].copy()  # no T controls
    model = scdit.fit(a, "condition", covariate_keys=["cell_type"], source="noise", max_steps=5,
                      seed=0, **tiny)
    label = next(g for g in model.vocab.featured if g not in ("G1", "G2", "G3"))
    stored = model.cells.reference.obs["cell_type"]
    b = model.predict(label, n_cells=4, covariates={"cell_type": "B"}, seed=0)
    assert b.uns["scdit"]["inverted"] == [label]
    assert (stored.loc[b.obs["reference_cell"]] == "B").all()
    # T has no stored control cells: B's carry library sizes over, but are not inverted as T
    t = model.predict(label, n_cells=4, covariates={"cell_type": "T"}, seed=0)
    assert t.uns["scdit"]["inverted"] == [] and (t.obs["cell_type"] == "T").all()


def test_stand_in_scales_modelled_and_unmodelled_genes(log1p_adata, tiny):
    """With genes outside the model, a stand-in's log1p cells are still its source cells with
    each gene scaled to the typical perturbation's mean (zeros stay zeros)."""
    a = log1p_adata.copy()
    a.obs["condition"] = ["ctrl" if lab == "ctrl" else "+".join(f"KO_{m}" for m in lab.split("+"))
                          for lab in a.obs.condition.astype(str)]
    model = scdit.fit(a, "condition", tokenizer=scdit.TokenizerConfig(n_top_genes=30),
                      max_steps=5, seed=0, **tiny)
    modelled = np.isin(a.var_names, model.tokenizer.genes)
    assert 0 < modelled.sum() < a.n_vars
    src = a[a.obs.condition == "ctrl"].copy()
    with pytest.warns(UserWarning, match="typical"):
        pred = model.predict("G3", source=src, seed=0)
    P, S = pred.X.toarray().astype(np.float64), src.X.toarray().astype(np.float64)
    X, lab = a.X.toarray(), a.obs.condition.to_numpy()
    target = np.mean([X[lab == p].mean(0) for p in np.unique(lab) if p != "ctrl"], axis=0)
    np.testing.assert_allclose(P.mean(0), target, atol=1e-3)
    some = S.any(0)
    for part in (modelled, ~modelled):
        cols = part & some
        assert cols.sum() > 5 and np.all(P[:, cols][S[:, cols] == 0] == 0)


def test_stand_in_with_rank_encoded_genes_is_shifted_to_its_mean(log1p_adata, tiny):
    """Rank-encoded tokens do not decode to clipped log1p: the stand-in's mean is set by the
    shift there (its change follows the typical effect), not left unset."""
    a = log1p_adata.copy()
    a.obs["condition"] = ["ctrl" if lab == "ctrl" else "+".join(f"KO_{m}" for m in lab.split("+"))
                          for lab in a.obs.condition.astype(str)]
    model = scdit.fit(a, "condition", tokenizer=scdit.TokenizerConfig(encoding="rank"),
                      max_steps=5, seed=0, **tiny)
    src = a[a.obs.condition == "ctrl"].copy()
    with pytest.warns(UserWarning, match="typical"):
        pred = model.predict("G3", source=src, seed=0)
    with pytest.warns(UserWarning, match="typical"):
        alone = model.predict("G3", source=src, seed=0, effects="none")
    X, lab = a.X.toarray(), a.obs.condition.to_numpy()
    ctrl = X[lab == "ctrl"].mean(0)
    effect = np.mean([X[lab == p].mean(0) for p in np.unique(lab) if p != "ctrl"], axis=0) - ctrl
    moved = pred.X.toarray().mean(0) - alone.X.toarray().mean(0)
    assert np.corrcoef(moved, effect)[0, 1] > 0.8


def test_stand_in_in_a_context_without_perturbed_cells_gets_the_pooled_mean(counts_adata, tiny):
    """The pooled typical estimate (control mean of the context plus the average effect of the
    others) is the stand-in's mean in log1p output."""
    a = counts_adata.copy()
    a.obs["condition"] = ["ctrl" if lab == "ctrl" else "+".join(f"KO_{m}" for m in lab.split("+"))
                          for lab in a.obs.condition.astype(str)]
    a = a[(a.obs.condition == "ctrl").to_numpy() | (a.obs.cell_type == "T").to_numpy()].copy()
    model = scdit.fit(a, "condition", covariate_keys=["cell_type"], max_steps=5, seed=0, **tiny)
    b = a[((a.obs.condition == "ctrl") & (a.obs.cell_type == "B")).to_numpy()].copy()
    with pytest.warns(UserWarning, match="typical"):
        pred = model.predict("G3", source=b, seed=0, representation="log1p")
    assert pred.uns["scdit"]["mean_set_by"] == {"G3 | B": "typical"}
    from scdit.data import counts_to_log1p

    L = np.asarray(counts_to_log1p(a.X).todense() if hasattr(a.X, "todense")
                   else counts_to_log1p(a.X))
    lab, ct = a.obs.condition.to_numpy(), a.obs.cell_type.to_numpy()
    ctrl_t = L[(lab == "ctrl") & (ct == "T")].mean(0)
    effect = np.mean([L[(lab == p) & (ct == "T")].mean(0) - ctrl_t
                      for p in np.unique(lab) if p != "ctrl"], axis=0)
    target = np.maximum(L[(lab == "ctrl") & (ct == "B")].mean(0) + effect, 0)
    modelled = np.isin(a.var_names, model.tokenizer.genes)
    got = pred.X.toarray().mean(0)
    assert np.abs(got - target)[modelled].max() < 1e-3
