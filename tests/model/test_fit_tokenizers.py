"""The tokenizer choice through fit: a name, a TokenizerConfig (or a dict of its fields), a trained
scVI model, a tokenizer object of a registered class; bad input; config round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdit
from scdit import ScDiTConfig, TokenizerConfig
from scdit.tokenizers import TOKENIZERS, GeneTokenizer, PCATokenizer, ScVITokenizer, register

TINY_SCVI = {"n_latent": 6, "max_epochs": 3}


@pytest.mark.parametrize(("kind", "kwargs"), [
    ("pca", {"n_components": 8}),
    ("scvi", {**TINY_SCVI, "batch_key": "cell_type"}),
    ("scvi", {**TINY_SCVI, "batch_key": "cell_type", "library": "generated"}),
    ("genes", {"encoding": "rank", "patch_size": 10}),
])
def test_fit_predict_save_load(kind, kwargs, counts_adata, tiny, tmp_path):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"],
                      tokenizer=TokenizerConfig(kind=kind, **kwargs), max_steps=10, seed=0, **tiny)
    assert model.config.tokenizer.kind == kind and model.summary["tokenizer"] == kind
    ceiling = model.summary["ceiling"]
    assert set(ceiling) >= {"per_gene_pearson", "mse", "pearson_delta"} and ceiling["held_out"]
    pred = model.predict(["G1", "G1+G2"], n_cells=15, seed=1)
    X = pred.X.toarray()
    assert pred.shape == (30, 50) and np.all(X == np.round(X)) and X.min() >= 0  # counts out
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["tokenizer"]["kind"] == kind and "ceiling" in meta["summary"]
    assert model.config.tokenizer.library == kwargs.get("library", "source")
    loaded = scdit.load(tmp_path / "m")
    assert type(loaded.tokenizer) is type(model.tokenizer)
    again = loaded.predict(["G1", "G1+G2"], n_cells=15, seed=1)
    np.testing.assert_array_equal(again.X.toarray(), X)


def test_scvi_with_control_source(counts_adata, tiny):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"],
                      tokenizer={"kind": "scvi", **TINY_SCVI, "batch_key": "cell_type"},
                      source="control", max_steps=5, **tiny)
    src = counts_adata[counts_adata.obs["condition"] == "ctrl"][:12].copy()
    pred = model.predict("G3", source=src, seed=0)
    assert pred.shape == (12, 50)
    assert list(pred.obs["cell_type"]) == list(src.obs["cell_type"])


def test_fit_with_pretrained_scvi_model(counts_adata, tiny):
    import anndata as ad
    import scvi

    train = ad.AnnData(X=sp.csr_matrix(counts_adata.X[:, :40]),
                       obs=counts_adata.obs[["cell_type"]].copy(),
                       var=pd.DataFrame(index=counts_adata.var_names[:40]))
    scvi.model.SCVI.setup_anndata(train, batch_key="cell_type")
    vae = scvi.model.SCVI(train, n_latent=4, gene_likelihood="nb")
    vae.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False)
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], tokenizer=vae,
                      max_steps=5, **tiny)
    cfg = model.config.tokenizer
    assert cfg.pretrained and cfg.n_latent == 4 and cfg.batch_key == "cell_type"
    assert model.tokenizer.genes == tuple(counts_adata.var_names[:40])
    pred = model.predict("G1", n_cells=10, seed=0)
    assert pred.shape == (10, 50)
    # options beyond the trained model's: a tokenizer object around it
    generated = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"],
                          tokenizer=ScVITokenizer(model=vae, library="generated"), max_steps=2,
                          **tiny)
    assert generated.config.tokenizer.pretrained and generated.config.tokenizer.library == "generated"
    with pytest.raises(ValueError, match="pass the trained scvi.model.SCVI itself"):
        scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"],
                  tokenizer=TokenizerConfig(kind="scvi", pretrained=True), **tiny)


def test_fit_tokenizer_bad_input(counts_adata, log1p_adata, tiny):
    adata = log1p_adata.copy()
    adata.layers["raw"] = sp.csr_matrix(counts_adata.X)
    with pytest.raises(ValueError, match=r"tokenizer='scvi' needs raw counts.*layer='raw'"):
        scdit.fit(adata, "condition", tokenizer="scvi", **tiny)
    with pytest.raises(ValueError, match=r"needs raw counts.*use tokenizer='genes' or 'pca'"):
        scdit.fit(log1p_adata, "condition", tokenizer="scvi", **tiny)
    with pytest.raises(ValueError, match=r"must also be a covariate key.*covariate_keys=\['cell_type'\]"):
        scdit.fit(counts_adata, "condition", tokenizer=TokenizerConfig(kind="scvi", batch_key="cell_type"),
                  **tiny)
    with pytest.raises(KeyError, match="batch_key 'lane' is not a column"):
        scdit.fit(counts_adata, "condition", tokenizer=TokenizerConfig(kind="scvi", batch_key="lane"),
                  **tiny)
    with pytest.raises(ValueError, match=r"option\(s\) \['n_latent'\] do not apply to tokenizer 'pca'"):
        scdit.fit(counts_adata, "condition", tokenizer=TokenizerConfig(kind="pca", n_latent=3), **tiny)
    with pytest.raises(ValueError, match=r"Unknown TokenizerConfig field\(s\) \['n_pcs'\]"):
        scdit.fit(counts_adata, "condition", tokenizer={"kind": "pca", "n_pcs": 3}, **tiny)
    with pytest.raises(ValueError, match=r"gene_features only records.*GeneTokenizer\(gene_features"):
        scdit.fit(counts_adata, "condition", tokenizer=TokenizerConfig(gene_features=True), **tiny)
    with pytest.raises(TypeError, match="tokenizer must be a name"):
        scdit.fit(counts_adata, "condition", tokenizer=3, **tiny)
    assert "_scvi_uuid" not in log1p_adata.uns and "_scvi_manager_uuid" not in counts_adata.uns


def test_custom_registered_tokenizer(counts_adata, tiny, tmp_path):
    @register("pca_test")
    class MyPCA(PCATokenizer):
        kind = "pca_test"

    try:
        model = scdit.fit(counts_adata, "condition", tokenizer=MyPCA(n_components=4), max_steps=5,
                          **tiny)
        model.save(tmp_path / "m")
        assert isinstance(scdit.load(tmp_path / "m").tokenizer, MyPCA)

        class Unregistered(PCATokenizer):
            kind = "nobody"

        with pytest.raises(ValueError, match="Register the tokenizer class"):
            scdit.fit(counts_adata, "condition", tokenizer=Unregistered(), **tiny)
    finally:
        TOKENIZERS.pop("pca_test")


def test_tokenizer_config_json_round_trip(counts_adata, tiny):
    model = scdit.fit(counts_adata, "condition",
                      tokenizer=TokenizerConfig(kind="pca", n_components=6, patch_size=3),
                      max_steps=2, **tiny)
    cfg = model.config
    assert cfg.tokenizer.n_components == 6 and cfg.tokenizer.patch_size == 3
    assert ScDiTConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_token_budget_from_the_preset_or_the_tokenizer_config(counts_adata, tiny):
    """max_tokens=None takes the preset's budget (tiny: 8); a TokenizerConfig's own wins."""
    by_preset = scdit.fit(counts_adata, "condition", max_steps=1, **tiny)
    assert by_preset.config.tokenizer.max_tokens == 8 and by_preset.tokenizer.n_tokens <= 8
    own = scdit.fit(counts_adata, "condition", tokenizer=TokenizerConfig(max_tokens=4,
                                                                           n_top_genes=20),
                    max_steps=1, **tiny)
    assert own.config.tokenizer.max_tokens == 4 and own.tokenizer.n_tokens <= 4
    assert own.tokenizer.n_genes == 20


def test_gene_features_through_a_tokenizer_object(counts_adata, tiny):
    """Options that are not plain values (a gene-feature table) go in a tokenizer object; the
    stored config records them."""
    rng = np.random.default_rng(0)
    feats = pd.DataFrame(rng.normal(size=(counts_adata.n_vars, 4)), index=counts_adata.var_names)
    model = scdit.fit(counts_adata, "condition",
                      tokenizer=GeneTokenizer(max_tokens=4, encoding="rank", gene_features=feats),
                      max_steps=1, **tiny)
    cfg = model.config.tokenizer
    assert (cfg.kind, cfg.max_tokens, cfg.encoding, cfg.gene_features) == ("genes", 4, "rank", True)
    assert ScDiTConfig.from_dict(json.loads(model.config.to_json())) == model.config
