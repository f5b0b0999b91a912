"""Control-source training: OT pairing within context groups, per-context source means."""

from __future__ import annotations

import numpy as np
import torch

from scdit.data._dataset import CellDataset
from scdit.train._module import group_ids, pair_within_groups


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
