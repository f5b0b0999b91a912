"""Gene tokenizer: gene selection, co-expression order, patching, encode/decode."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scdit.tokenizers import (
    TOKENIZERS,
    GeneTokenizer,
    build_tokenizer,
    coexpression_order,
    select_genes,
)


@pytest.fixture
def log1p(log1p_adata):
    """Dense log1p matrix of the shared synthetic data and its gene names."""
    return log1p_adata.X.toarray(), list(log1p_adata.var_names)


def test_encode_decode_round_trip_exact(log1p):
    X, names = log1p
    tok = GeneTokenizer(n_top_genes=2000, max_tokens=8).fit(X, names)
    assert tok.n_genes == 50 and sorted(tok.genes) == sorted(names)
    idx = [names.index(g) for g in tok.genes]
    x = torch.as_tensor(X[:, idx])
    z = tok.encode(x)
    assert z.shape == (X.shape[0], tok.n_tokens, tok.patch_size)
    torch.testing.assert_close(tok.decode(z), x, atol=1e-5, rtol=0)
    # standardised: per-gene mean ~ 0
    flat = z.reshape(len(z), -1)[:, : tok.n_genes]
    assert flat.mean(0).abs().max() < 1e-4
    # padded slots are zero; decoding clips at 0
    assert torch.all(z.reshape(len(z), -1)[:, tok.n_genes:] == 0)
    low = tok.decode(torch.full_like(z, -50.0))
    assert torch.all(low == 0)


@pytest.mark.parametrize(("n_genes", "max_tokens"), [(50, 8), (50, 64), (7, 3), (128, 16),
                                                     (129, 16), (1, 4)])
def test_patching_respects_max_tokens(n_genes, max_tokens):
    rng = np.random.default_rng(0)
    X = np.log1p(rng.poisson(2.0, (60, n_genes))).astype(np.float32)
    tok = GeneTokenizer(n_top_genes=10_000, max_tokens=max_tokens, gene_order="given")
    tok.fit(X, [f"g{i}" for i in range(n_genes)])
    assert tok.n_tokens <= max_tokens
    assert tok.n_tokens * tok.patch_size >= n_genes
    assert tok.n_tokens * tok.patch_size - n_genes < tok.patch_size  # no empty token
    z = tok.encode(torch.as_tensor(X))
    torch.testing.assert_close(tok.decode(z), torch.as_tensor(X), atol=1e-5, rtol=0)


def test_required_genes_always_kept():
    rng = np.random.default_rng(0)
    n, g = 200, 40
    X = np.log1p(rng.poisson(2.0, (n, g))).astype(np.float32)
    X[:, 30] = 0.0  # never expressed
    X[:, 31] = 1.0  # constant
    names = [f"g{i}" for i in range(g)]
    required = ["g30", "g31", "g35", "not_measured"]
    tok = GeneTokenizer(n_top_genes=10, max_tokens=4).fit(X, names, required_genes=required)
    assert {"g30", "g31", "g35"} <= set(tok.genes)
    assert tok.n_genes == 10 and len(set(tok.genes)) == 10
    plain = GeneTokenizer(n_top_genes=10, max_tokens=4).fit(X, names)
    assert not {"g30", "g31"} & set(plain.genes)


@pytest.mark.parametrize(("n_genes", "r", "min_hits"), [(40, 0.5, 40), (100, 1.0, 35)])
def test_selects_overdispersed_genes(n_genes, r, min_hits):
    """10 over-dispersed NB genes among Poisson genes of the same mean are found (5 datasets)."""
    hits = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        X = rng.poisson(3.0, (300, n_genes)).astype(np.float64)
        X[:, :10] = rng.negative_binomial(r, r / (r + 3.0), (300, 10))
        chosen = select_genes(np.log1p(X), [f"g{i}" for i in range(n_genes)], n_top=10)
        assert len(chosen) == 10 and chosen == sorted(set(chosen))
        hits += sum(c < 10 for c in chosen)
    assert hits >= min_hits


def test_more_required_genes_than_budget_keeps_them_all():
    rng = np.random.default_rng(1)
    X = np.log1p(rng.poisson(1.0, (50, 20))).astype(np.float32)
    names = [f"g{i}" for i in range(20)]
    req = [f"g{i}" for i in range(0, 20, 3)]  # 7 genes
    chosen = [names[i] for i in select_genes(X, names, n_top=4, required=req)]
    assert set(req) <= set(chosen)


def test_coexpression_order_is_permutation_grouping_correlated_genes():
    rng = np.random.default_rng(0)
    n, g = 300, 12
    f1, f2 = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
    block = np.arange(g) % 2  # interleaved: even genes follow f1, odd genes f2
    X = np.where(block == 0, f1, f2) + 0.3 * rng.normal(size=(n, g))
    order = coexpression_order(X)
    assert sorted(order.tolist()) == list(range(g))
    changes = int(np.sum(block[order][1:] != block[order][:-1]))
    assert changes == 1  # the two co-expression modules are contiguous


def test_tokenizer_gene_order(log1p):
    X, names = log1p
    given = GeneTokenizer(max_tokens=8, gene_order="given").fit(X, names)
    assert list(given.genes) == names
    coexp = GeneTokenizer(max_tokens=8, gene_order="coexpression").fit(X, names)
    assert sorted(coexp.genes) == sorted(names) and list(coexp.genes) != names
    with pytest.raises(ValueError, match="gene_order"):
        GeneTokenizer(gene_order="random")


def test_sparse_and_dense_fit_agree(log1p):
    X, names = log1p
    dense = GeneTokenizer(n_top_genes=20, max_tokens=8).fit(X, names)
    sparse = GeneTokenizer(n_top_genes=20, max_tokens=8).fit(sp.csr_matrix(X), names)
    assert dense.genes == sparse.genes
    torch.testing.assert_close(dense.mean, sparse.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense.std, sparse.std, atol=1e-5, rtol=1e-5)


def test_state_round_trip(log1p):
    X, names = log1p
    tok = GeneTokenizer(n_top_genes=30, max_tokens=8).fit(X, names, seed=3)
    meta, arrays = tok.state()
    again = GeneTokenizer.from_state(meta, arrays)
    assert again.genes == tok.genes and again.n_tokens == tok.n_tokens
    x = torch.as_tensor(X[:, [names.index(g) for g in tok.genes]])
    assert torch.equal(again.encode(x), tok.encode(x))


def test_registry():
    assert TOKENIZERS["genes"] is GeneTokenizer
    assert isinstance(build_tokenizer("genes", max_tokens=4), GeneTokenizer)
    with pytest.raises(ValueError, match="Unknown tokenizer 'scgpt'"):
        build_tokenizer("scgpt")
