"""The fast sampling paths of predict / sample: bf16 autocast of the velocity network, labels
integrated in shared batches, and the progress bar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scdit
from scdit.flow import guided, integrate
from scdit.model import NoiseStream
from scdit.model._seeds import LabelSeeds
from tests.helpers import dense

FP32 = scdit.SamplingConfig(precision="fp32")
BF16 = scdit.SamplingConfig(precision="bf16")


def rows_of(out, label: str) -> np.ndarray:
    return dense(out.X[(out.obs["condition"] == label).to_numpy()])


def test_fp32_is_the_plain_fp32_flow(log1p_model):
    """precision="fp32" integrates the fp32 network exactly as the plain flow does (then the
    tokens' decoded mean is matched to their mean before clipping, one context here)."""
    m, n = log1p_model, 12
    got = m.sample("G1", n, seed=5, effects="none", sampling=FP32, output="tokens")
    gen = torch.Generator().manual_seed(LabelSeeds(5, "G1").torch_seed())
    x1 = NoiseStream(n, m.generator.shape, gen, True).take(0, n)
    cond = {"atoms": torch.as_tensor(m.vocab.encode(["G1"] * n)),
            "covariates": torch.zeros((n, 0), dtype=torch.long)}
    scale = m.summary["seen_guidance"]["scale"]  # the default guidance of a seen label
    want = integrate(guided(m.field, cond, scale), x1, steps=m.config.flow.steps,
                     solver=m.config.flow.solver)
    np.testing.assert_array_equal(got, m.tokenizer.match_decoded_mean(want).numpy())
    assert not np.array_equal(got, want.numpy())  # the tiny model's cells do reach below 0


@pytest.mark.parametrize("label", ["G1", "G2+G3"])
def test_bf16_means_agree_with_fp32(counts_model, label):
    """bf16 autocast changes the generated cells by rounding only: per-gene means agree with
    fp32 to a small fraction of the genes' spread (the unseen G2+G3 is composed)."""
    kw = dict(covariates={"cell_type": "T"}, seed=0, effects="none")
    a = counts_model.sample(label, 300, sampling=FP32, **kw)
    b = counts_model.sample(label, 300, sampling=BF16, **kw)
    assert not np.array_equal(a, b)  # bf16 did run
    spread = np.median(a.std(0))
    assert np.abs(a.mean(0) - b.mean(0)).max() < 0.02 * spread
    assert np.abs(a - b).mean() < 0.01 * spread


def test_precision_is_recorded(log1p_model):
    for p in ("fp32", "bf16"):
        out = log1p_model.predict("G1", n_cells=3, seed=0,
                                  sampling=scdit.SamplingConfig(precision=p))
        assert out.uns["scdit"]["precision"] == p
    auto = log1p_model.predict("G1", n_cells=3, seed=0).uns["scdit"]["precision"]
    assert auto == ("bf16" if scdit.models.bf16_supported("cpu") else "fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_labels_in_shared_batches_match_each_alone(counts_model, precision):
    """Labels integrated in shared batches (7 cells of 2 to 3 labels, a seen combination padded
    beside singles, an unseen composed combination in its own batches, a label whose mean an
    estimate sets) give each label's cells as predicting it alone."""
    labels = ["G1", "G1+G2", "G2+G3", "ctrl", "G3"]
    kw = dict(n_cells=10, seed=4, representation="log1p", effects="auto", verbose=False,
              sampling=scdit.SamplingConfig(batch_size=7, precision=precision))
    together = counts_model.predict(labels, **kw)
    for label in labels:
        alone = counts_model.predict(label, **kw)
        np.testing.assert_allclose(rows_of(together, label), rows_of(alone, label), atol=1e-5)


def test_progress_bar(log1p_model, capsys, monkeypatch):
    """Shown (once the call has run PROGRESS_DELAY seconds) for predictions of more than one
    batch; never for one batch or with verbose=False."""
    monkeypatch.setattr(scdit.model._sampler, "PROGRESS_DELAY", 0.0)
    two = scdit.SamplingConfig(batch_size=8, steps=2)
    log1p_model.predict(["G1", "G2"], n_cells=6, seed=0, sampling=two)
    assert "cells" in capsys.readouterr().err
    log1p_model.predict(["G1", "G2"], n_cells=6, seed=0, sampling=two, verbose=False)
    log1p_model.sample("G1", 12, seed=0, sampling=two, verbose=False)
    log1p_model.predict(["G1"], n_cells=6, seed=0, sampling=two)
    assert capsys.readouterr().err == ""
    log1p_model.sample("G1", 12, seed=0, sampling=two)
    assert "sample" in capsys.readouterr().err
    with pytest.raises(TypeError, match="verbose"):
        log1p_model.predict("G1", n_cells=2, verbose="no")
