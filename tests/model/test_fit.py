"""scdit.fit: the fitted summary, seeding and determinism, silence, the source rule."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch

import scdit
from tests.helpers import GENES, dense


def test_fit_summary(counts_model):
    m = counts_model
    assert m.representation == "counts" and m.condition_key == "condition"
    assert m.vocab.control == "ctrl" and m.vocab.atoms == ("G1", "G2", "G3")
    assert list(m.var_names) == GENES
    assert m.tokenizer.n_genes == 30 and {"G1", "G2", "G3"} <= set(m.tokenizer.genes)
    assert m.tokenizer.n_tokens <= 8  # tiny preset token budget
    assert m.summary["steps"] == 40 and m.summary["n_modelled_genes"] == 30
    assert m.covariates.keys == ("cell_type",)
    assert "3 perturbations" in repr(m)


@pytest.fixture
def small_adata(make_adata):
    return make_adata(seed=2, conditions={"ctrl": 60, "G1": 40, "G2": 40, "G1+G2": 40})


def _weights(model):
    return {k: v.clone() for k, v in model.field.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_same_seed_gives_identical_weights(small_adata, tiny):
    adata = small_adata
    torch.manual_seed(123)
    a = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    torch.manual_seed(456)  # unrelated global RNG use between fits must not matter
    b = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    assert _same(_weights(a), _weights(b))


def test_fit_is_deterministic_once_global_rng_is_fixed(small_adata, tiny):
    """Training itself (batches, noise, times, dropout) is seeded: only the init leaks."""
    adata = small_adata
    torch.manual_seed(7)
    a = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    torch.manual_seed(7)
    b = scdit.fit(adata, "condition", max_steps=8, seed=0, **tiny)
    assert _same(_weights(a), _weights(b))
    assert np.array_equal(dense(a.predict("G1", n_cells=10, seed=0).X),
                          dense(b.predict("G1", n_cells=10, seed=0).X))
    torch.manual_seed(7)
    c = scdit.fit(adata, "condition", max_steps=8, seed=1, **tiny)
    assert not _same(_weights(a), _weights(c))


def test_fit_verbose_false_is_silent(caplog, capsys, small_adata, tiny):
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scdit.fit(small_adata, "condition", max_steps=2, seed=0, **tiny)
    chatter = [r.getMessage() for r in caplog.records
               if r.name.startswith("lightning") and r.levelno < logging.WARNING]
    chatter += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert chatter == []
    assert capsys.readouterr().out == ""


def test_source_auto_rule(counts_adata, tiny):
    with_cov = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], max_steps=2,
                         **tiny)
    assert with_cov.config.flow.source == "control"
    without = scdit.fit(counts_adata, "condition", max_steps=2, **tiny)
    assert without.config.flow.source == "noise"
