"""PCA tokenizer: exact full-rank round trip, fewer components, state round trip, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdit.tokenizers import (
    PCATokenizer,
)
from tests.tokenizers.helpers import round_trip


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
    back = round_trip(tok)
    assert isinstance(back, PCATokenizer) and back.genes == tok.genes
    torch.testing.assert_close(back.decode(back.encode(torch.as_tensor(back.prepare(X)))), rec)


def test_pca_bad_input():
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        PCATokenizer(n_components=0)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        PCATokenizer(patch_size=0)
    with pytest.raises(RuntimeError, match="must be fitted before prepare"):
        PCATokenizer().prepare(np.zeros((2, 3)))
