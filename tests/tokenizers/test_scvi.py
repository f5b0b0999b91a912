"""scVI tokenizer: shapes, decoding, state round trip without pickle, generated library, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from scdit.tokenizers import (
    ScVITokenizer,
    tokenizer_from_state,
)
from tests.tokenizers.helpers import round_trip

TINY_SCVI = {"n_latent": 6, "max_epochs": 3}


@pytest.fixture(scope="module")
def scvi_tok(data):
    counts, X, names, obs = data
    return ScVITokenizer(**TINY_SCVI, max_tokens=4, batch_key="cell_type").fit(
        X, names, counts=counts, obs=obs, seed=0)


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
    back = round_trip(tok)
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
