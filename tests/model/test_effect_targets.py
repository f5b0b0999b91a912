"""Effect estimates setting the generated mean (seen, additive, genes outside the model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scdit
from scdit.model import LIBRARY_KEY
from tests.model.effect_helpers import (
    assert_constant_shift,
    decoded_mean,
    decoded_target,
    reference_token_mean,
)


def test_anchor_seen_perturbation_gets_its_training_mean(counts_model):
    for label in ("G1", "G1+G2", "ctrl"):  # seen single, seen combination, control
        cov = pd.DataFrame({"cell_type": ["T"] * 20 + ["B"] * 20})
        plain = torch.as_tensor(counts_model.sample(label, 40, covariates=cov, output="tokens",
                                                    seed=5))
        tok = torch.as_tensor(counts_model.sample(label, 40, covariates=cov, output="tokens",
                                                  seed=5, effects="always"))
        for rows, ct in ((slice(0, 20), "T"), (slice(20, 40), "B")):
            expected = decoded_target(counts_model, reference_token_mean(counts_model, label, ct))
            torch.testing.assert_close(decoded_mean(counts_model, tok[rows]), expected,
                                       atol=1e-4, rtol=0)
            assert_constant_shift(tok[rows], plain[rows])  # one shift per gene and context


def test_anchored_decoded_mean_survives_clipping(counts_model):
    """Clipping at 0 would raise the mean of lowly expressed genes; anchoring corrects for it."""
    tk = counts_model.tokenizer
    rng = torch.Generator().manual_seed(0)
    tokens = torch.randn((200, tk.n_tokens, tk.patch_size), generator=rng) * 2 - 1.0
    out = tk.match_decoded_mean(tokens)
    assert_constant_shift(out, tokens)
    target = decoded_target(counts_model, tokens.double().mean(0))
    assert (tk.decode(tokens).double().mean(0) - target).abs().max() > 0.05  # clipping bias
    torch.testing.assert_close(tk.decode(out).double().mean(0), target, atol=1e-4, rtol=0)


def test_generator_alone_keeps_its_own_mean_through_clipping(counts_model, monkeypatch):
    """effects="none": per context a seen label was seen in, the decoded mean of the generated
    cells is the mean the generator produced before clipping at 0 (clipping alone raises genes
    near 0), by one constant shift per gene and context; predict's log1p output likewise. An
    unseen label's cells are clipped as generated."""
    tk = counts_model.tokenizer
    raw = []

    def spy(tokens, orig=tk.match_decoded_mean):
        raw.append(tokens.clone())
        return orig(tokens)

    monkeypatch.setattr(tk, "match_decoded_mean", spy)
    cov = pd.DataFrame({"cell_type": ["T"] * 150 + ["B"] * 150})
    tok = torch.as_tensor(counts_model.sample("G1", 300, covariates=cov, seed=2,
                                              effects="none", output="tokens"))
    assert len(raw) == 2  # one match per context, T first
    biased = 0.0
    for rows, r in zip((slice(0, 150), slice(150, 300)), raw, strict=True):
        target = decoded_target(counts_model, r.double().mean(0))
        biased = max(biased, float((decoded_mean(counts_model, r) - target).abs().max()))
        torch.testing.assert_close(decoded_mean(counts_model, tok[rows]), target, atol=1e-4,
                                   rtol=0)
        assert_constant_shift(tok[rows], r)
    assert biased > 0.05  # without the match, clipping would have moved the means
    raw.clear()
    out = counts_model.predict("G1", n_cells=120, covariates={"cell_type": "B"}, seed=4,
                               effects="none", representation="log1p")
    assert len(raw) == 1
    got = torch.as_tensor(out[:, list(tk.genes)].X.toarray()).double().mean(0)
    torch.testing.assert_close(got, decoded_target(counts_model, raw[0].double().mean(0)),
                               atol=1e-4, rtol=0)
    raw.clear()
    counts_model.sample("G2+G3", 40, covariates={"cell_type": "T"}, seed=1, effects="none")
    assert raw == []  # an unseen combination: not matched
    counts_model.sample("G2+G1", 40, covariates={"cell_type": "T"}, seed=1, effects="none")
    assert len(raw) == 1  # the seen G1+G2, written in another order


def test_generator_alone_is_clipped_as_generated_in_a_held_out_context(counts_adata, tiny,
                                                                      monkeypatch):
    """G1 never seen in cell type B: its B cells are not matched, its T cells are."""
    train = counts_adata[~((counts_adata.obs.condition == "G1")
                           & (counts_adata.obs.cell_type == "B"))].copy()
    model = scdit.fit(train, "condition", covariate_keys=["cell_type"], source="noise",
                      max_steps=5, **tiny)
    tk, raw = model.tokenizer, []

    def spy(tokens, orig=tk.match_decoded_mean):
        raw.append(tokens.clone())
        return orig(tokens)

    monkeypatch.setattr(tk, "match_decoded_mean", spy)
    cov = pd.DataFrame({"cell_type": ["B"] * 30 + ["T"] * 30})
    tok = torch.as_tensor(model.sample("G1", 60, covariates=cov, seed=0, effects="none",
                                       output="tokens"))
    assert len(raw) == 1 and len(raw[0]) == 30  # T only
    torch.testing.assert_close(decoded_mean(model, tok[30:]),
                               decoded_target(model, raw[0].double().mean(0)), atol=1e-4,
                               rtol=0)
    raw.clear()
    model.predict("G1", n_cells=20, covariates={"cell_type": "B"}, seed=0, effects="none")
    assert raw == []


def test_generator_alone_is_renormalised_where_its_label_was_not_seen(counts_adata, tiny,
                                                                     counts_model):
    """A counts model's cells whose mean the generator sets, of a context their label was not
    seen in, sum to the normalisation's total in expm1 over all genes (modelled or not);
    cells of a seen context, and cells whose mean an estimate sets, are written as generated."""
    train = counts_adata[~((counts_adata.obs.condition == "G1")
                           & (counts_adata.obs.cell_type == "B"))].copy()
    model = scdit.fit(train, "condition", covariate_keys=["cell_type"], max_steps=5, **tiny)
    source = counts_adata[counts_adata.obs.condition == "ctrl"]

    def sums(m, label, effects, cell_type):
        src = source[source.obs.cell_type == cell_type] if m is model else None
        out = m.predict(label, n_cells=30, source=src, seed=0, effects=effects,
                        covariates=None if src is not None else {"cell_type": cell_type},
                        representation="log1p")
        assert out.n_vars == counts_adata.n_vars
        return out.uns["scdit"]["mean_set_by"], \
            np.expm1(out.X.toarray().astype(np.float64)).sum(1)

    for m, label, cell_type in ((model, "G1", "B"), (counts_model, "G2+G3", "T")):
        by, total = sums(m, label, "none", cell_type)
        assert set(by.values()) == {"generator"}
        np.testing.assert_allclose(total, 1e4, rtol=1e-4)
    for m, label, effects in ((model, "G1", "none"), (counts_model, "G2+G3", "auto")):
        by, total = sums(m, label, effects, "T")
        assert set(by.values()) == ({"generator"} if effects == "none" else {"additive"})
        assert np.abs(total / 1e4 - 1).max() > 1e-2


def test_counts_carry_the_rescaled_means(counts_adata, tiny, monkeypatch):
    """The counts of cells rescaled to the total are rounded to the rescaled log1p means (per
    gene, after each cell is normalised by its own total), not to the generated ones."""
    from scdit.data import counts_to_log1p
    from scdit.model import EffectTargets

    train = counts_adata[~((counts_adata.obs.condition == "G1")
                           & (counts_adata.obs.cell_type == "B"))].copy()
    # source noise 0.5 (the default is 0.1): the 5-step model's cells then drift off the
    # normalisation's total, so that rescaling them moves their means (checked below)
    model = scdit.fit(train, "condition", covariate_keys=["cell_type"], max_steps=5,
                      flow=scdit.FlowConfig(source_noise=0.5), **tiny)
    src = counts_adata[(counts_adata.obs.condition == "ctrl")
                       & (counts_adata.obs.cell_type == "B")]

    def means(representation):
        out = model.predict("G1", source=src, seed=0, effects="none",
                            representation=representation)
        X = out.X if representation == "log1p" else counts_to_log1p(out.X)
        return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64).mean(0)

    counts, rescaled = means("counts"), means("log1p")
    monkeypatch.setattr(EffectTargets, "unseen_here",
                        lambda self, label, cov_df, n: np.zeros(n, dtype=bool))
    generated = means("log1p")
    assert np.abs(rescaled - generated).mean() > 0.05
    assert np.abs(counts - rescaled).mean() < 0.2 * np.abs(counts - generated).mean()


def test_anchor_unseen_combination_is_additive(counts_model):
    """Unseen A+B: the additive mean from training means, one shift per gene over the
    generator's own cells."""
    cov = {"cell_type": "T"}

    def gen(label, effects="none"):
        return torch.as_tensor(counts_model.sample(label, 30, covariates=cov, output="tokens",
                                                   seed=11, effects=effects)).double()

    ab = gen("G2+G3")
    mu = {k: reference_token_mean(counts_model, k, "T") for k in ("G2", "G3", "ctrl")}
    additive = mu["G2"] + mu["G3"] - mu["ctrl"]
    out = gen("G2+G3", effects=scdit.EffectConfig("always", shrink=False))
    torch.testing.assert_close(decoded_mean(counts_model, out),
                               decoded_target(counts_model, additive), atol=1e-4, rtol=0)
    assert_constant_shift(out, ab)
    pred = counts_model.predict("G3+G2", n_cells=8, covariates=cov, seed=0)
    assert pred.shape[0] == 8 and pred.uns["scdit"]["mean_set_by"] == {"G3+G2 | T": "additive"}
    assert np.isfinite(pred.X.toarray()).all()
    with pytest.raises(ValueError, match="mode must be one of"):
        gen("G2+G3", effects="yes")


def _unmodelled_log1p(model, cells) -> tuple[np.ndarray, np.ndarray]:
    """Unmodelled columns of ``cells`` (counts) as log1p of each cell's whole library, and
    their indices, computed here."""
    cols = np.setdiff1d(np.arange(model.var_names.size), model.gene_index)
    X = cells.X.toarray() if sp.issparse(cells.X) else np.asarray(cells.X)
    lib = X.sum(1) if LIBRARY_KEY not in cells.obs else \
        cells.obs[LIBRARY_KEY].to_numpy()
    return np.log1p(X[:, cols] / lib[:, None] * 1e4), cols


def test_anchor_covers_the_genes_outside_the_model(counts_model):
    """The 20 unmodelled genes (carried over from reference cells) get the anchored mean too:
    a seen label its training mean, an unseen combination the additive one; effects="none"
    leaves them as the reference cells have them."""
    ref = counts_model.reference
    assert counts_model.var_names.size - len(counts_model.gene_index) == 20

    def group(label):
        rows = ((ref.obs.condition.astype(str) == label) & (ref.obs.cell_type == "T")).to_numpy()
        return _unmodelled_log1p(counts_model, ref[rows])[0].mean(0)

    for label, target in (("G1", group("G1")),
                          ("G2+G3", group("G2") + group("G3") - group("ctrl"))):
        out = counts_model.predict(label, n_cells=60, covariates={"cell_type": "T"}, seed=2,
                                   effects="always", representation="log1p")
        X = out.X.toarray()
        cols = np.setdiff1d(np.arange(out.n_vars), counts_model.gene_index)
        np.testing.assert_allclose(X[:, cols].mean(0), np.maximum(target, 0), atol=1e-4)
        assert X.min() >= 0
        plain = counts_model.predict(label, n_cells=60, covariates={"cell_type": "T"}, seed=2,
                                     effects="none", representation="log1p").X.toarray()
        assert np.abs(plain[:, cols].mean(0) - np.maximum(target, 0)).max() > 1e-2
    # counts output: integers. This barely trained model's log1p cells have expm1 sums far
    # from 10^4, so no rounding can give every gene its anchored mean once each cell is
    # normalised by its total (as an evaluation does); matched rounding comes closer than the
    # same cells renormalised (what rounding each value without bias amounts to)
    out = counts_model.predict("G1", n_cells=400, covariates={"cell_type": "T"}, seed=2,
                               effects="always")
    X = out.X.toarray()
    np.testing.assert_array_equal(X, np.round(X))
    # G1's own stored cells already have G1's depth, so no depth factor applies
    assert "depth_factor" not in out.uns["scdit"]
    out.obs = out.obs.drop(columns=[LIBRARY_KEY], errors="ignore")
    got = _unmodelled_log1p(counts_model, out)[0].mean(0)
    log1p = counts_model.predict("G1", n_cells=400, covariates={"cell_type": "T"}, seed=2,
                                 effects="always", representation="log1p").X.toarray()
    renorm = np.log1p(np.expm1(log1p) * 1e4 / np.expm1(log1p).sum(1, keepdims=True))
    assert np.abs(got - group("G1")).mean() < 0.8 * np.abs(renorm[:, cols].mean(0)
                                                           - group("G1")).mean()


def test_default_estimates_seen_and_unseen_labels(counts_model):
    cov = {"cell_type": "B"}

    def tok(label, **kw):
        return counts_model.sample(label, 12, covariates=cov, output="tokens", seed=2, **kw)

    np.testing.assert_array_equal(tok("G2+G3"), tok("G2+G3", effects="always"))  # unseen: on
    assert not np.allclose(tok("G2+G3"), tok("G2+G3", effects="none"))
    for seen in ("G1+G2", "G1"):  # seen: their training means, as with "always"
        np.testing.assert_array_equal(tok(seen), tok(seen, effects="always"))
        assert not np.allclose(tok(seen), tok(seen, effects="none"))
    out = counts_model.predict("G1", n_cells=3, seed=0)
    assert out.uns["scdit"]["effects"] == "auto"
    assert set(out.uns["scdit"]["mean_set_by"].values()) == {"seen"}
