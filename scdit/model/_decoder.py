"""The genes outside the model, decoded from the generated ones.

A model generates the genes its tokenizer models (by default the 2,000 most variable); the
others are copied from each generated cell's reference cell. Where an effect estimate sets a
prediction's mean they are shifted to its target (:meth:`EffectTargets.unmodelled_anchor`);
where the generator alone sets it, copying them would predict *no change* for every gene
outside the model, however far the generated genes moved. :class:`GeneDecoder` is a linear map
from a change of the modelled genes to the change it implies for the others: a ridge
regression of the unmodelled genes' log1p values on the top principal components of the
modelled genes as the tokenizer decodes them, fitted cell by cell on the model's stored
training cells (of every condition and context, without their labels). Each context's
unmodelled genes are then shifted so that their mean moves by the decoded change of the
generated genes' mean from the reference cells' (:meth:`EffectTargets.decoded_anchor`). No
effect estimate enters it; what it knows of a perturbation's response is the covariation of
genes across the training cells, the response of other contexts included. It is part of the
generator's output, like the tokenizer's decoder (CellFlow, for example, decodes all genes
from 50 principal components).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..effects import expression_basis

#: Principal components of the modelled genes the decoder regresses on.
DECODER_RANK = 50
#: Most stored cells the decoder is fitted on (a seeded random subsample beyond this).
DECODER_CELLS = 3000
#: Ridge penalty, relative to the largest component's sum of squares.
DECODER_RIDGE = 1e-3
#: Unmodelled genes a dense fit reads at a time.
GENE_BLOCK = 4096


@dataclass(frozen=True)
class GeneDecoder:
    """``delta (b, M) -> (b, U)``: the change of the ``U`` unmodelled genes (log1p) implied by a
    change ``delta`` of the ``M`` modelled genes (log1p), ``(delta @ axes) @ coef``.

    Attributes
    ----------
    axes
        Orthonormal principal axes of the modelled genes ``(M, k)``.
    coef
        Ridge coefficients of the unmodelled genes on the components ``(k, U)``.
    """

    axes: np.ndarray
    coef: np.ndarray

    def __call__(self, delta: np.ndarray) -> np.ndarray:
        return (np.asarray(delta, dtype=np.float64) @ self.axes) @ self.coef

    @classmethod
    def fit(cls, modelled: np.ndarray, unmodelled, *, rank: int = DECODER_RANK,
            ridge: float = DECODER_RIDGE, seed: int = 0) -> GeneDecoder | None:
        """Fit on cells' log1p values of the modelled genes ``(n, M)`` (dense) and of the
        unmodelled ones ``(n, U)`` (dense or sparse); ``None`` with fewer than 3 cells or
        without variation in the modelled genes.

        The components are the top ``rank`` principal axes of the modelled genes
        (:func:`scdit.effects.expression_basis`; all ``M`` genes when ``rank ≥ min(n − 1,
        M)``), the coefficients ``(SᵀS + λ I)⁻¹ Sᵀ (U − Ū)`` for the cells' component scores
        ``S``, with ``λ = ridge`` × the largest eigenvalue of ``SᵀS``. A dense ``unmodelled``
        is read in blocks of genes (no float64 copy of it).
        """
        Z = np.asarray(modelled, dtype=np.float64)
        n, m = Z.shape
        if n < 3 or unmodelled.shape[1] == 0:
            return None
        Z = Z - Z.mean(0)
        axes = expression_basis(Z, rank, max_cells=n, seed=seed)
        if axes is None:  # no more components than genes or cells: regress on all genes
            axes = np.eye(m)
        S = Z @ axes  # (n, k), centred
        gram = S.T @ S
        top = float(np.linalg.eigvalsh(gram)[-1]) if len(gram) else 0.0
        if top <= 0:
            return None
        # Sᵀ U = Sᵀ (U − Ū): the scores sum to 0 over the cells
        if sp.issparse(unmodelled):
            cross = np.asarray((sp.csr_matrix(unmodelled, dtype=np.float64).T @ S).T)
        else:
            cross = np.empty((S.shape[1], unmodelled.shape[1]))
            for a in range(0, unmodelled.shape[1], GENE_BLOCK):
                block = np.asarray(unmodelled[:, a:a + GENE_BLOCK], dtype=np.float64)
                cross[:, a:a + GENE_BLOCK] = S.T @ block
        coef = np.linalg.solve(gram + ridge * top * np.eye(len(gram)), cross)
        return cls(np.ascontiguousarray(axes), coef)


def fit_decoder(cells, tokenizer, encode, *, rank: int = DECODER_RANK,
                max_cells: int = DECODER_CELLS, ridge: float = DECODER_RIDGE,
                seed: int = 0) -> GeneDecoder | None:
    """The :class:`GeneDecoder` of a model's stored reference cells (a
    :class:`~scdit.model.CellStore`; a seeded subsample of at most ``max_cells``), on their
    modelled genes as ``tokenizer`` decodes their tokens (``encode``: cells → tokens; the
    scale of the changes it is applied to), ``None`` when the tokenizer models every gene."""
    if not len(cells.unmodelled):
        return None
    ref = cells.reference
    rows = np.arange(ref.n_obs)
    if ref.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(ref.n_obs, max_cells, replace=False))
    sub = ref[rows]
    Z = tokenizer.decode(encode(sub), obs=sub.obs).double().numpy()
    return GeneDecoder.fit(Z, cells.log1p_columns(sub), rank=rank, ridge=ridge, seed=seed)
