"""Gene tokenizer options: patch size, rank encoding, gene-feature initialisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scdit.tokenizers import (
    GeneTokenizer,
    RankCodec,
)
from tests.tokenizers.helpers import round_trip


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
    back = round_trip(tok)
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
    from scdit.models import GeneTokenEmbed

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
