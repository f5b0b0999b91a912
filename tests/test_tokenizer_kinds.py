"""PCA and scVI tokenizers, gene-tokenizer options, reconstruction ceiling, tokenizer choice in fit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scdit
from scdit._config import ScDiTConfig
from scdit.data._representation import counts_to_log1p
from scdit.tokenizers import (
    TOKENIZERS,
    GeneTokenizer,
    PCATokenizer,
    ScVITokenizer,
    reconstruct,
    reconstruction_ceiling,
    register,
    tokenizer_from_state,
)
from scdit.tokenizers._rank import RankCodec

TINY_SCVI = {"n_latent": 6, "max_epochs": 3}


@pytest.fixture(scope="module")
def data():
    """(counts CSR, log1p CSR, var_names, obs) of the shared synthetic data."""
    from conftest import make_counts_adata

    adata = make_counts_adata()
    counts = sp.csr_matrix(adata.X)
    return counts, counts_to_log1p(counts), list(adata.var_names), adata.obs


@pytest.fixture(scope="module")
def scvi_tok(data):
    counts, X, names, obs = data
    return ScVITokenizer(**TINY_SCVI, max_tokens=4, batch_key="cell_type").fit(
        X, names, counts=counts, obs=obs, seed=0)


def _round_trip(tok):
    meta, arrays = tok.state()
    meta = json.loads(json.dumps(meta))  # must be JSON-able
    return tokenizer_from_state(meta, {k: np.asarray(v) for k, v in arrays.items()})


# ---------------------------------------------------------------------------------------- PCA
def test_pca_full_rank_round_trip_is_exact(data):
    _, X, names, _ = data
    tok = PCATokenizer(n_components=50, max_tokens=8).fit(X, names)
    assert tok.n_features == 50 and (tok.n_tokens, tok.patch_size) == (8, 7)
    Z = tok.prepare(X)
    assert Z.shape == (X.shape[0], 50) and Z.dtype == np.float32
    np.testing.assert_allclose(Z, tok.prepare(X.toarray()), atol=1e-4)
    tokens = tok.encode(torch.as_tensor(Z))
    assert tokens.shape == (X.shape[0], 8, 7)
    assert torch.all(tokens.reshape(len(Z), -1)[:, 50:] == 0)
    rec = tok.decode(tokens)
    np.testing.assert_allclose(rec.numpy(), X.toarray(), atol=1e-3)


def test_pca_fewer_components_and_save_load(data):
    _, X, names, _ = data
    tok = PCATokenizer(n_components=5, patch_size=2).fit(X, names)
    assert (tok.n_features, tok.n_tokens, tok.patch_size) == (5, 3, 2)
    assert np.all(np.diff(tok.explained_variance) <= 1e-6)  # sorted
    tokens = tok.encode(torch.as_tensor(tok.prepare(X)))
    rec = tok.decode(tokens)
    assert rec.shape == (X.shape[0], 50) and rec.min() >= 0
    back = _round_trip(tok)
    assert isinstance(back, PCATokenizer) and back.genes == tok.genes
    torch.testing.assert_close(back.decode(back.encode(torch.as_tensor(back.prepare(X)))), rec)


def test_pca_bad_input():
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        PCATokenizer(n_components=0)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        PCATokenizer(patch_size=0)
    with pytest.raises(RuntimeError, match="must be fitted before prepare"):
        PCATokenizer().prepare(np.zeros((2, 3)))


# ------------------------------------------------------------------------------- gene options
def test_gene_patch_size_overrides_max_tokens(data):
    _, X, names, _ = data
    tok = GeneTokenizer(max_tokens=4, patch_size=3).fit(X, names)
    assert (tok.n_tokens, tok.patch_size) == (17, 3)
    assert sp.issparse(tok.prepare(X))  # gene subset stays sparse


def test_rank_codec_scores_and_values():
    x = torch.log1p(torch.tensor([[0.0, 5.0, 1.0, 20.0], [3.0, 0.0, 0.0, 1.0]]))
    codec = RankCodec(norm=np.ones(4, np.float32), level=np.log([10.0, 3.0, 1.0, 1.0]).astype(np.float32))
    r = codec.scores(x)
    torch.testing.assert_close(r[0], torch.tensor([0.0, 0.75, 0.5, 1.0]))
    torch.testing.assert_close(r[1], torch.tensor([1.0, 0.0, 0.0, 0.75]))
    v = codec.values(r)
    assert torch.all((v > 0) == (x > 0))  # expressed genes stay expressed, zeros stay zero
    assert v[0, 3] > v[0, 1] > v[0, 2]  # order kept


def test_rank_encoding_round_trip_keeps_order(data):
    _, X, names, _ = data
    tok = GeneTokenizer(max_tokens=8, encoding="rank", gene_order="given").fit(X, names)
    x = torch.as_tensor(X.toarray())
    rec = tok.decode(tok.encode(x))
    assert rec.shape == x.shape
    assert torch.all((rec > 0) == (x > 0))
    back = _round_trip(tok)
    assert back.encoding == "rank"
    torch.testing.assert_close(back.decode(back.encode(x)), rec)
    with pytest.raises(ValueError, match="encoding must be one of"):
        GeneTokenizer(encoding="geneformer")


def test_gene_features_initialise_identity_embeddings(data):
    _, X, names, _ = data
    rng = np.random.default_rng(0)
    feats = pd.DataFrame(rng.normal(size=(40, 6)), index=names[:40])
    tok = GeneTokenizer(max_tokens=8, gene_features=feats).fit(X, names)
    init = tok.gene_embedding_init
    assert init.shape == (50, 6)
    missing = [i for i, g in enumerate(tok.genes) if g not in feats.index]
    assert len(missing) == 10 and np.all(init[missing] == 0)
    from scdit.models._embed import GeneTokenEmbed

    emb = GeneTokenEmbed(tok.n_tokens, tok.patch_size, 16, tok.n_genes)
    emb.init_identity(init)
    flat = emb.identity.detach().reshape(-1, 16)[:50]
    assert torch.all(flat[:, 6:] == 0) and abs(float(flat.std()) - 0.02) < 0.01
    with pytest.raises(ValueError, match="None of the 50 modelled genes"):
        GeneTokenizer(gene_features=pd.DataFrame({"a": [1.0]}, index=["zzz"])).fit(X, names)
    with pytest.raises(TypeError, match="gene_features must be a pandas DataFrame"):
        GeneTokenizer(gene_features=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="must be numeric"):
        GeneTokenizer(gene_features=pd.DataFrame({"a": ["x"]}, index=["G1"]))


# --------------------------------------------------------------------------------------- scVI
def test_scvi_shapes_and_decoding(scvi_tok, data):
    counts, X, names, obs = data
    tok = scvi_tok
    assert tok.n_features == 6 and (tok.n_tokens, tok.patch_size) == (3, 2)
    assert tok.batch_categories == ["B", "T"] and tok.frac == pytest.approx(1.0)
    Z = tok.prepare(X, counts=counts, obs=obs)
    assert Z.shape == (counts.shape[0], 6) and np.isfinite(Z).all()
    tokens = tok.encode(torch.as_tensor(Z[:30]))
    assert tokens.shape == (30, 3, 2)
    rec = tok.decode(tokens, obs=obs.iloc[:30])
    assert rec.shape == (30, 50) and rec.min() >= 0
    # log1p-normalised NB means: expm1 sums to the 1e4 target
    np.testing.assert_allclose(torch.expm1(rec).sum(1).numpy(), 1e4, rtol=1e-3)
    lib = np.full(30, 500.0)
    c = tok.decode_counts(tokens, lib, obs=obs.iloc[:30], generator=0)
    assert c.shape == (30, 50) and torch.all(c == c.round()) and c.min() >= 0
    assert abs(float(c.sum(1).mean()) / 500 - 1) < 0.1
    torch.testing.assert_close(c, tok.decode_counts(tokens, lib, obs=obs.iloc[:30], generator=0))


def test_scvi_state_round_trip_without_pickle(scvi_tok, data):
    counts, X, _, obs = data
    meta, arrays = scvi_tok.state()
    text = json.dumps(meta)
    assert "module_kwargs" in text and all(isinstance(v, np.ndarray) for v in arrays.values())
    back = tokenizer_from_state(json.loads(text), arrays)
    assert isinstance(back, ScVITokenizer)
    np.testing.assert_allclose(back.prepare(X, counts=counts, obs=obs),
                               scvi_tok.prepare(X, counts=counts, obs=obs), atol=1e-5)
    tokens = scvi_tok.encode(torch.as_tensor(scvi_tok.prepare(X[:5], counts=counts[:5], obs=obs.iloc[:5])))
    torch.testing.assert_close(back.decode(tokens, obs=obs.iloc[:5]),
                               scvi_tok.decode(tokens, obs=obs.iloc[:5]))


def test_scvi_generated_library(data):
    counts, X, names, obs = data
    tok = ScVITokenizer(**TINY_SCVI, max_tokens=4, batch_key="cell_type", library="generated").fit(
        X, names, counts=counts, obs=obs, seed=0)
    assert tok.n_features == 7 and (tok.n_tokens, tok.patch_size) == (4, 2)
    Z = tok.prepare(X, counts=counts, obs=obs)
    lib = np.asarray(counts.sum(1)).ravel()
    np.testing.assert_allclose(Z[:, -1], np.log(np.maximum(lib, 1)), rtol=1e-5)
    assert tok.log_library_range == pytest.approx((Z[:, -1].min(), Z[:, -1].max()))
    rows = np.argsort(lib)[::13][:30]  # cells across the range of library sizes
    tokens = tok.encode(torch.as_tensor(Z[rows]))
    # the library passed in is ignored: counts follow each cell's own encoded library size
    c = tok.decode_counts(tokens, np.full(len(rows), 1e6), obs=obs.iloc[rows], generator=0)
    assert abs(float(c.sum()) / lib[rows].sum() - 1) < 0.1
    np.testing.assert_allclose(tok.generated_log_library(tokens).numpy(),
                               np.log(np.maximum(lib[rows], 1)), rtol=1e-4)
    # the library feature does not change the normalised (log1p) decoding; it is clipped
    flat = tokens.reshape(len(rows), -1).clone()
    flat[:, 6] = 100.0
    moved = flat.reshape(tokens.shape)
    torch.testing.assert_close(tok.decode(moved, obs=obs.iloc[rows]), tok.decode(tokens, obs=obs.iloc[rows]))
    assert torch.all(tok.generated_log_library(moved) == tok.log_library_range[1])
    back = _round_trip(tok)
    assert back.library == "generated" and back.log_library_range == tok.log_library_range
    torch.testing.assert_close(back.decode_counts(tokens, None, obs=obs.iloc[rows], generator=3),
                               tok.decode_counts(tokens, None, obs=obs.iloc[rows], generator=3))
    with pytest.raises(ValueError, match="takes library sizes from source cells"):
        ScVITokenizer(**TINY_SCVI).generated_log_library(tokens)


def test_scvi_bad_input(scvi_tok, data):
    counts, X, names, obs = data
    with pytest.raises(ValueError, match="needs raw counts.*layer='counts'"):
        ScVITokenizer(**TINY_SCVI).fit(X, names)
    with pytest.raises(KeyError, match="pass obs with column 'cell_type'"):
        scvi_tok.decode(torch.zeros(2, 3, 2))
    bad = pd.DataFrame({"cell_type": ["T", "Z"]})
    with pytest.raises(ValueError, match=r"Unknown 'cell_type' value\(s\) \['Z'\]"):
        scvi_tok.decode(torch.zeros(2, 3, 2), obs=bad)
    with pytest.raises(ValueError, match="gene_likelihood must be one of"):
        ScVITokenizer(gene_likelihood="normal")
    with pytest.raises(ValueError, match=r"library must be one of \['source', 'generated'\]"):
        ScVITokenizer(library="observed")
    with pytest.raises(TypeError, match="model must be a trained scvi.model.SCVI"):
        ScVITokenizer(model=object())


# ------------------------------------------------------------------------------------ ceiling
def test_reconstruction_ceiling(data):
    _, X, names, obs = data
    labels = obs["condition"].to_numpy()
    exact = reconstruction_ceiling(GeneTokenizer(max_tokens=8).fit(X, names), X, names,
                                   labels=labels, control="ctrl")
    assert exact["per_gene_pearson"] > 0.999 and exact["mse"] < 1e-8
    assert exact["pearson_delta"] > 0.999 and exact["n_perturbations"] == 4
    low = reconstruction_ceiling(PCATokenizer(n_components=2).fit(X, names), X, names,
                                 labels=labels, control="ctrl", max_cells=100)
    assert low["n_cells"] == 100 and low["per_gene_pearson"] < exact["per_gene_pearson"]
    assert low["mse"] > exact["mse"]
    no_labels = reconstruction_ceiling(PCATokenizer(n_components=2).fit(X, names), X, names)
    assert np.isnan(no_labels["pearson_delta"])
    assert reconstruct(PCATokenizer(n_components=2).fit(X, names), X).shape == (400, 50)


# --------------------------------------------------------------------------------- through fit
@pytest.mark.parametrize(("kind", "kwargs"), [
    ("pca", {"n_components": 8}),
    ("scvi", {**TINY_SCVI, "batch_key": "cell_type"}),
    ("scvi", {**TINY_SCVI, "batch_key": "cell_type", "library": "generated"}),
    ("genes", {"encoding": "rank", "patch_size": 10}),
])
def test_fit_predict_save_load(kind, kwargs, counts_adata, tiny, tmp_path):
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], tokenizer=kind,
                      tokenizer_kwargs=kwargs, max_steps=10, seed=0, **tiny)
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
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], tokenizer="scvi",
                      tokenizer_kwargs={**TINY_SCVI, "batch_key": "cell_type"}, source="control",
                      max_steps=5, **tiny)
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
    with pytest.raises(ValueError, match="come from the trained SCVI model"):
        scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], tokenizer=vae,
                  tokenizer_kwargs={"n_latent": 8}, **tiny)


def test_fit_tokenizer_bad_input(counts_adata, log1p_adata, tiny):
    adata = log1p_adata.copy()
    adata.layers["raw"] = sp.csr_matrix(counts_adata.X)
    with pytest.raises(ValueError, match=r"tokenizer='scvi' needs raw counts.*layer='raw'"):
        scdit.fit(adata, "condition", tokenizer="scvi", **tiny)
    with pytest.raises(ValueError, match=r"needs raw counts.*use tokenizer='genes' or 'pca'"):
        scdit.fit(log1p_adata, "condition", tokenizer="scvi", **tiny)
    with pytest.raises(ValueError, match=r"must also be a covariate key.*covariate_keys=\['cell_type'\]"):
        scdit.fit(counts_adata, "condition", tokenizer="scvi",
                  tokenizer_kwargs={"batch_key": "cell_type"}, **tiny)
    with pytest.raises(KeyError, match="batch_key 'lane' is not a column"):
        scdit.fit(counts_adata, "condition", tokenizer="scvi", tokenizer_kwargs={"batch_key": "lane"},
                  **tiny)
    with pytest.raises(ValueError, match=r"Unknown tokenizer_kwargs \['n_latent'\] for tokenizer 'pca'"):
        scdit.fit(counts_adata, "condition", tokenizer="pca", tokenizer_kwargs={"n_latent": 3}, **tiny)
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
    model = scdit.fit(counts_adata, "condition", tokenizer="pca",
                      tokenizer_kwargs={"n_components": 6, "patch_size": 3}, max_steps=2, **tiny)
    cfg = model.config
    assert cfg.tokenizer.n_components == 6 and cfg.tokenizer.patch_size == 3
    assert ScDiTConfig.from_dict(json.loads(cfg.to_json())) == cfg
