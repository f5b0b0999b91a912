"""Fixtures of the tokenizer tests: the shared synthetic data as matrices."""

from __future__ import annotations

import pytest
import scipy.sparse as sp

from scdit.data import counts_to_log1p


@pytest.fixture(scope="module")
def data():
    """(counts CSR, log1p CSR, var_names, obs) of the shared synthetic data."""
    from tests.helpers import make_counts_adata

    adata = make_counts_adata()
    counts = sp.csr_matrix(adata.X)
    return counts, counts_to_log1p(counts), list(adata.var_names), adata.obs
