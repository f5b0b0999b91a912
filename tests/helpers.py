"""Shared synthetic data of the tests: small perturbation AnnData with known effects.

The data: ``ctrl`` cells, three single perturbations (``G1``, ``G2``, ``G3``, named after measured
genes) and one double (``G1+G2``), two cell types (``T``, ``B``), negative-binomial counts over 50
genes ``G0`` … ``G49``. Each single knocks down its target gene and up-regulates its own block of
five genes; the double does both; cell type ``B`` triples genes ``G30`` … ``G34``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scdit import TrainConfig
from scdit.data import counts_to_log1p

N_GENES = 50
GENES = [f"G{j}" for j in range(N_GENES)]
CONDITIONS = {"ctrl": 160, "G1": 60, "G2": 60, "G3": 60, "G1+G2": 60}
UP_BLOCKS = {"G1": range(10, 15), "G2": range(15, 20), "G3": range(20, 25)}
#: Tiny fits without the guidance calibration of seen perturbations (a few seconds per fit:
#: most of a tiny fit's time); the shared ``counts_model`` and ``log1p_model`` fixtures and the
#: calibration tests use :data:`TINY_CALIBRATED`.


def tiny_train(**fields) -> TrainConfig:
    """The tiny fits' :class:`~scdit.TrainConfig` (batch 64, no guidance calibration), with
    ``fields`` set or overridden."""
    return TrainConfig(**{"batch_size": 64, "calibrate_guidance": False, **fields})


TINY = {"preset": "tiny", "train": tiny_train(), "verbose": False}
TINY_CALIBRATED = {**TINY, "train": tiny_train(calibrate_guidance=True)}


def dense(X) -> np.ndarray:
    """A dense copy-free view of ``X`` (sparse matrices are densified)."""
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def make_counts_adata(seed: int = 0, n_genes: int = N_GENES, conditions=None) -> ad.AnnData:
    """Negative-binomial counts with perturbation and cell-type effects (dense float32 X)."""
    conditions = conditions or CONDITIONS
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[c] * n for c, n in conditions.items()])
    n = len(labels)
    cell_type = np.where(np.arange(n) % 2 == 0, "T", "B")
    base = rng.gamma(2.0, 1.0, size=n_genes) + 0.5  # (G,)
    mu = np.tile(base, (n, 1))  # (N, G)
    for i, lab in enumerate(labels):
        for atom in lab.split("+"):
            if atom in UP_BLOCKS:
                mu[i, list(UP_BLOCKS[atom])] *= 4.0
                mu[i, int(atom[1:])] *= 0.1
    mu[cell_type == "B", 30:35] *= 3.0
    r = 5.0
    X = rng.negative_binomial(r, r / (r + mu)).astype(np.float32)  # (N, G)
    obs = pd.DataFrame({"condition": labels, "cell_type": cell_type},
                       index=[f"cell{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"G{j}" for j in range(n_genes)])
    return ad.AnnData(X=X, obs=obs, var=var)


def make_log1p_adata(seed: int = 0, sparse: bool = True) -> ad.AnnData:
    """The counts data normalised to 1e4 and log1p-transformed (CSR by default)."""
    adata = make_counts_adata(seed)
    X = counts_to_log1p(sp.csr_matrix(adata.X))
    adata.X = X if sparse else X.toarray()
    return adata
