"""Shared fixtures: small synthetic perturbation AnnData and tiny fitted models.

The data are described in :mod:`tests.helpers`, whose factories test modules may import.
"""

from __future__ import annotations

import anndata as ad
import pytest
import torch

import scdit
from tests.helpers import TINY, TINY_CALIBRATED, make_counts_adata, make_log1p_adata

# Small tensors on a shared 2-core machine: torch's default intra-op thread pool spends far more
# time synchronising than computing (measured ~40x slower linears under load), so tests use one.
torch.set_num_threads(1)


@pytest.fixture
def make_adata():
    """The :func:`tests.helpers.make_counts_adata` factory."""
    return make_counts_adata


@pytest.fixture
def tiny() -> dict:
    """Keyword arguments of a tiny, quiet ``scdit.fit``."""
    return dict(TINY)


@pytest.fixture
def counts_adata() -> ad.AnnData:
    return make_counts_adata()


@pytest.fixture
def log1p_adata() -> ad.AnnData:
    return make_log1p_adata()


@pytest.fixture(scope="session")
def counts_model():
    """Counts model with a covariate, modelling 30 of 50 genes (20 unmodelled)."""
    adata = make_counts_adata()
    return scdit.fit(adata, "condition", covariate_keys=["cell_type"],
                     tokenizer=scdit.TokenizerConfig(n_top_genes=30), source="noise", max_steps=40,
                     seed=0, **TINY_CALIBRATED)


@pytest.fixture(scope="session")
def log1p_model():
    """log1p model on sparse input, all genes modelled, no covariates."""
    return scdit.fit(make_log1p_adata(), "condition", max_steps=20, seed=0, **TINY_CALIBRATED)
