"""The sampler's Gaussian draws: independent of the batch size, centred per block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scdit
from scdit.model import NOISE_BLOCK, NoiseStream


def _draw(n, batch, center, seed=0, shape=(3, 4)):
    s = NoiseStream(n, shape, torch.Generator().manual_seed(seed), center)
    return torch.cat([s.take(i, min(n, i + batch)) for i in range(0, n, batch)])


@pytest.mark.parametrize("center", [True, False])
def test_draws_do_not_depend_on_the_slices(center):
    n = 2 * NOISE_BLOCK + 37
    a = _draw(n, n, center)
    for batch in (1, 7, NOISE_BLOCK - 1, NOISE_BLOCK + 5):
        assert torch.equal(a, _draw(n, batch, center))


def test_centred_blocks_sum_to_zero_with_unit_marginals():
    n = 2 * NOISE_BLOCK + 37  # three blocks of near-equal size
    x = _draw(n, 500, True, shape=(64,))
    starts = NoiseStream(n, (64,), torch.Generator(), True).starts
    assert len(starts) == 4 and np.diff(starts).max() - np.diff(starts).min() <= 1
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        assert x[a:b].mean(0).abs().max() < 1e-5
    # marginals: still standard normal (centring loses one degree of freedom, rescaled back)
    assert x.std().item() == pytest.approx(1.0, abs=0.02)
    iid = _draw(n, 500, False, shape=(64,))
    assert iid.mean(0).abs().max() > 10 * x.mean(0).abs().max()


def test_single_cell_is_a_plain_draw():
    x = _draw(1, 1, True, seed=5)
    y = torch.randn((1, 3, 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, y)


def test_slices_must_be_consecutive():
    s = NoiseStream(3000, (2,), torch.Generator().manual_seed(0), True)
    assert s.take(0, 0).shape == (0, 2)
    assert s.take(0, 10).shape == (10, 2)
    for start, stop in ((2500, 2510), (5, 20), (10, 3001)):  # a gap, a step back, past the end
        with pytest.raises(ValueError, match=r"consecutive slices of its 3000 cells: the next "
                                             r"one starts at 10"):
            s.take(start, stop)
    assert s.take(10, 3000).shape == (2990, 2)


def test_center_noise_checked():
    with pytest.raises(TypeError, match="center_noise must be True or False"):
        scdit.SamplingConfig(center_noise="yes")


def test_centred_noise_lowers_the_spread_of_predicted_means(log1p_model):
    """Across seeds, the mean of a prediction varies less with centred noise."""
    def means(center):
        cfg = scdit.SamplingConfig(steps=4, center_noise=center)
        return np.stack([np.asarray(log1p_model.predict("G1", n_cells=64, seed=s, sampling=cfg,
                                                       effects="none").X.mean(0)).ravel()
                         for s in range(6)])
    assert means(True).std(0).mean() < means(False).std(0).mean()
