"""ScDiT.predict decodes, converts and anchors a chunk of cells at a time (bounded memory):
the chunked output is a CSR float32 matrix whose context means are those of the whole."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import scdit


def _unmodelled(model) -> np.ndarray:
    return np.setdiff1d(np.arange(model.var_names.size), model.gene_index)


def test_chunked_anchoring_sets_each_context_mean(counts_model):
    """Cells of two contexts interleaved, output assembled 7 cells at a time: the unmodelled
    genes of each context still get that context's training mean (one shift per context,
    solved over all its cells, not per chunk)."""
    ref, cols = counts_model.reference, _unmodelled(counts_model)
    small = scdit.SamplingConfig(batch_size=7)
    out = counts_model.predict("G1", n_cells=90, seed=3, effects="always",
                               representation="log1p", sampling=small)
    assert sp.isspmatrix_csr(out.X) and out.X.dtype == np.float32 and out.shape == (90, 50)
    assert out.obs_names.is_unique
    X = out.X.toarray()
    lib = ref.obs[scdit.model.LIBRARY_KEY].to_numpy()
    R = np.log1p(ref.X.toarray()[:, cols] / lib[:, None] * 1e4)
    cts = out.obs["cell_type"].to_numpy()
    assert set(cts) == {"T", "B"}
    for ct in ("T", "B"):
        group = ((ref.obs.condition.astype(str) == "G1") & (ref.obs.cell_type == ct)).to_numpy()
        np.testing.assert_allclose(X[cts == ct][:, cols].mean(0),
                                   np.maximum(R[group].mean(0), 0), atol=1e-4)


def test_chunked_counts_are_integers_and_reproducible(counts_model):
    small = scdit.SamplingConfig(batch_size=5)
    a = counts_model.predict(["G1", "G3+G2"], n_cells=23, seed=0, effects="always",
                             sampling=small)
    b = counts_model.predict(["G1", "G3+G2"], n_cells=23, seed=0, effects="always",
                             sampling=small)
    X = a.X.toarray()
    assert a.shape == (46, 50) and np.array_equal(X, np.round(X)) and X.min() >= 0
    assert (a.X != b.X).nnz == 0
    assert a.obs["condition"].tolist() == ["G1"] * 23 + ["G3+G2"] * 23
