"""Synthetic perturbation screens with known ground truth (negative-binomial counts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import logsumexp

__all__ = ["SyntheticTruth", "synthetic_perturbation"]


@dataclass
class SyntheticTruth:
    """Ground truth of a :func:`synthetic_perturbation` screen.

    Arrays indexed ``(condition, cell_type, gene)`` follow the order of :attr:`conditions`,
    :attr:`cell_types` and :attr:`genes`; natural logarithms throughout.

    Attributes
    ----------
    conditions
        ``"control"``, then the single perturbations, then the combinations ``"A+B"``.
    cell_types
        Cell-type labels.
    genes
        Gene names (``var_names``).
    log_proportions
        ``(C, K, G)`` log of each gene's expected share of a cell's counts.
    expected_log1p
        ``(C, K, G)`` ``log1p(target_sum * proportions)``: the noise-free value of
        ``log1p(normalize_total(target_sum))`` expression. The mean of real log1p values of a group
        is slightly below it for lowly expressed genes (Jensen's inequality).
    lfc
        ``(C, K, G)`` true log fold-change versus the control of the same cell type
        (``log_proportions - log_proportions[control]``).
    effects
        ``(C, K, G)`` log effects added to the baseline before renormalisation (zero for control;
        for combinations, the sum of the singles' effects plus the interaction).
    interactions
        ``(C, K, G)`` interaction term of each combination (already multiplied by
        ``interaction_scale``; zero for control and singles).
    targets
        Single perturbation -> target gene name.
    target_genes_measured
        Whether target genes are among :attr:`genes`.
    library_size
        ``(n_cells,)`` library size drawn for each cell (expected total count), in ``obs`` order.
    dispersion
        ``(G,)`` negative-binomial dispersion ``phi`` (variance ``mu + phi * mu**2``).
    target_sum
        Normalisation total used by :attr:`expected_log1p`.
    """

    conditions: list[str]
    cell_types: list[str]
    genes: list[str]
    log_proportions: np.ndarray
    expected_log1p: np.ndarray
    lfc: np.ndarray
    effects: np.ndarray
    interactions: np.ndarray
    targets: dict[str, str]
    target_genes_measured: bool
    library_size: np.ndarray
    dispersion: np.ndarray
    target_sum: float = 1e4
    combinations: dict[str, tuple[str, str]] = field(default_factory=dict)

    def index(self, condition: str) -> int:
        """Position of ``condition`` along the first axis of the truth arrays."""
        return self.conditions.index(condition)

    def frame(self, kind: str = "expected_log1p", cell_type: str | None = None) -> pd.DataFrame:
        """One truth array for one cell type as a conditions × genes DataFrame.

        Parameters
        ----------
        kind
            ``"expected_log1p"``, ``"log_proportions"``, ``"lfc"``, ``"effects"`` or
            ``"interactions"``.
        cell_type
            Defaults to the first cell type.
        """
        k = self.cell_types.index(cell_type) if cell_type is not None else 0
        return pd.DataFrame(getattr(self, kind)[:, k, :], index=self.conditions, columns=self.genes)


def _lognormal_sizes(rng: np.random.Generator, n: int, mean: float, cv: float) -> np.ndarray:
    sigma2 = np.log1p(cv**2)
    return rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), size=n)


def _nb_counts(rng: np.random.Generator, mu: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Negative-binomial draws as a gamma-Poisson mixture; ``phi == 0`` gives Poisson."""
    rate = mu
    if np.any(phi > 0):
        shape = 1.0 / np.maximum(phi, 1e-12)
        rate = np.where(phi > 0, rng.gamma(shape, mu / shape), mu)
    return rng.poisson(rate)


def synthetic_perturbation(
    n_genes: int = 200,
    n_perturbations: int = 10,
    n_combinations: int = 5,
    n_cells_per_condition: int = 100,
    n_control: int = 300,
    cell_types: Sequence[str] = ("A", "B"),
    effect_size: float = 1.0,
    effect_sparsity: float = 0.1,
    target_effect: float = 2.5,
    interaction_scale: float = 0.0,
    celltype_specific_scale: float = 0.3,
    celltype_baseline_scale: float = 0.5,
    library_size_mean: float = 2000.0,
    library_size_cv: float = 0.3,
    dispersion: float | Sequence[float] = 0.1,
    target_genes_measured: bool = True,
    seed: int = 0,
    return_truth: bool = True,
) -> ad.AnnData | tuple[ad.AnnData, SyntheticTruth]:
    """Simulate a perturbation screen with single and combinatorial perturbations.

    Generative model (natural logs; ``g`` gene, ``k`` cell type, ``p`` perturbation):

    1. Baseline: ``b_g ~ N(0, 1.2²)`` and a cell-type offset
       ``c_kg ~ N(0, celltype_baseline_scale²)``.
    2. Single perturbation ``p`` with target ``t_p``: a sparse effect on a random
       ``effect_sparsity`` share of genes, ``d_pg ~ N(0, effect_size²)``, plus the target's own
       change ``±target_effect`` (knockdown or activation, sign drawn at random). Cell type ``k``
       adds ``celltype_specific_scale · N(0, effect_size²)`` on the same genes (not the target):
       ``D_pk = d_p + e_pk``. Targets are drawn among the more expressed half of the genes and
       named as genes of ``var_names`` when ``target_genes_measured``; otherwise the
       perturbation is named after an unmeasured gene (``U000`` ...), so only downstream
       effects are visible.
    3. Combination ``A+B``: ``D_ABk = D_Ak + D_Bk + interaction_scale · I_AB`` with
       ``I_AB ~ N(0, effect_size²)`` on the genes either single affects plus
       ``effect_sparsity · n_genes`` random genes (shared by cell types).
       ``interaction_scale = 0`` makes combinations exactly additive in log-proportion space
       (and nearly additive in log1p-normalised space).
    4. Expression share: ``q_ckg = softmax_g(b_g + c_kg + D_ckg)``.
    5. Cells: library size ``L ~ LogNormal`` with mean ``library_size_mean`` and coefficient of
       variation ``library_size_cv``; counts ``x_g ~ NB(mean L · q_g, dispersion)`` with variance
       ``mu + dispersion · mu²`` (gamma-Poisson).

    ``n_control`` control cells and ``n_cells_per_condition`` cells of every perturbation are drawn
    *per cell type*; cells are shuffled.

    Parameters
    ----------
    n_genes, n_perturbations, n_combinations
        Genes, single perturbations, and distinct pairs of singles.
    n_cells_per_condition, n_control
        Cells per perturbation and control cells, per cell type.
    cell_types
        Cell-type labels (the covariate).
    effect_size, effect_sparsity, target_effect
        Scale of downstream log effects, share of genes affected, and the target's log change.
    interaction_scale
        Size of non-additive interactions in combinations, relative to ``effect_size``.
    celltype_specific_scale, celltype_baseline_scale
        Cell-type-specific share of perturbation responses, and of the baseline.
    library_size_mean, library_size_cv
        Mean and coefficient of variation of library sizes.
    dispersion
        Negative-binomial dispersion, scalar or one per gene (0 gives Poisson).
    target_genes_measured
        Whether the perturbations' target genes are measured.
    seed
        Random seed; equal seeds give identical data.
    return_truth
        Also return the :class:`SyntheticTruth`.

    Returns
    -------
    adata
        ``X`` integer counts (float32 CSR); ``obs["perturbation"]`` (``control``, singles,
        ``A+B``), ``obs["cell_type"]``, ``obs["library_size"]`` (the drawn library size) and
        ``obs["n_counts"]`` (observed total); ``var["perturbation_target"]``;
        ``uns["scdit_dataset"]``.
    truth
        Only when ``return_truth``.
    """
    n_pairs = n_perturbations * (n_perturbations - 1) // 2
    if n_genes < 2 or n_perturbations < 0 or not cell_types:
        raise ValueError("need n_genes >= 2, n_perturbations >= 0 and at least one cell type")
    if n_combinations > n_pairs:
        raise ValueError(f"n_combinations={n_combinations} > {n_pairs} possible pairs")
    if target_genes_measured and n_perturbations > n_genes:
        raise ValueError("more perturbations than genes to target")
    rng = np.random.default_rng(seed)
    G, K, cts = n_genes, len(cell_types), [str(c) for c in cell_types]
    genes = [f"G{i:0{max(3, len(str(G - 1)))}d}" for i in range(G)]
    phi = np.broadcast_to(np.asarray(dispersion, dtype=float), (G,)).copy()

    base = rng.normal(0.0, 1.2, G)[None, :] + rng.normal(0.0, celltype_baseline_scale, (K, G))
    n_eff = max(1, int(round(effect_sparsity * G)))
    pool = np.argsort(-base.mean(0))[: max(n_perturbations, G // 2)]
    tgt_idx = (
        rng.choice(pool, size=n_perturbations, replace=False)
        if target_genes_measured
        else np.full(n_perturbations, -1)
    )
    singles = (
        [genes[i] for i in tgt_idx]
        if target_genes_measured
        else [f"U{i:03d}" for i in range(n_perturbations)]
    )

    eff_s = np.zeros((n_perturbations, K, G))
    support = []
    for p in range(n_perturbations):
        s = rng.choice(G, size=n_eff, replace=False)
        s = s[s != tgt_idx[p]]
        support.append(s)
        shared = rng.normal(0.0, effect_size, s.size)
        specific = celltype_specific_scale * rng.normal(0.0, effect_size, (K, s.size))
        eff_s[p][:, s] = shared[None, :] + specific
        if target_genes_measured:
            eff_s[p][:, tgt_idx[p]] = target_effect * rng.choice([-1.0, 1.0])

    all_pairs = list(combinations(range(n_perturbations), 2))
    chosen = (
        sorted(rng.choice(len(all_pairs), size=n_combinations, replace=False))
        if n_combinations
        else []
    )
    pairs = [all_pairs[i] for i in chosen]
    combos = [f"{singles[a]}+{singles[b]}" for a, b in pairs]
    inter = np.zeros((n_combinations, K, G))
    for j, (a, b) in enumerate(pairs):
        s = np.union1d(np.union1d(support[a], support[b]), rng.choice(G, n_eff, replace=False))
        inter[j][:, s] = interaction_scale * rng.normal(0.0, effect_size, s.size)[None, :]
    eff_c = (
        eff_s[[a for a, _ in pairs]] + eff_s[[b for _, b in pairs]] + inter
        if pairs
        else np.zeros((0, K, G))
    )

    conditions = ["control", *singles, *combos]
    effects = np.concatenate([np.zeros((1, K, G)), eff_s, eff_c])
    interactions = np.concatenate([np.zeros((1 + n_perturbations, K, G)), inter])
    eta = base[None] + effects
    logq = eta - logsumexp(eta, axis=-1, keepdims=True)

    blocks, cond_col, ct_col, libs = [], [], [], []
    for c, cond in enumerate(conditions):
        n = n_control if c == 0 else n_cells_per_condition
        for k, ct in enumerate(cts):
            lib = _lognormal_sizes(rng, n, library_size_mean, library_size_cv)
            x = _nb_counts(rng, lib[:, None] * np.exp(logq[c, k])[None, :], phi)
            blocks.append(sp.csr_matrix(x.astype(np.float32)))
            cond_col += [cond] * n
            ct_col += [ct] * n
            libs.append(lib)
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, G), dtype=np.float32)
    order = rng.permutation(X.shape[0])
    X = X[order]
    library = np.concatenate(libs)[order] if libs else np.zeros(0)

    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(np.asarray(cond_col)[order], categories=conditions),
            "cell_type": pd.Categorical(np.asarray(ct_col)[order], categories=cts),
            "library_size": library,
            "n_counts": np.asarray(X.sum(axis=1)).ravel(),
        },
        index=[f"cell{i}" for i in range(X.shape[0])],
    )
    var = pd.DataFrame({"perturbation_target": np.isin(np.arange(G), tgt_idx)}, index=genes)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["scdit_dataset"] = {
        "name": "synthetic",
        "title": "synthetic_perturbation() negative-binomial screen",
        "condition_key": "perturbation",
        "control": "control",
        "combination_separator": "+",
        "covariate_keys": ["cell_type"],
        "cell_type_key": "cell_type",
        "perturbation_type": ["CRISPRi", "CRISPRa"],
        "representation": "counts",
        "license": "BSD-3-Clause",
        "citation": "Synthetic data from scdit.datasets.synthetic_perturbation",
        "seed": int(seed),
    }
    if not return_truth:
        return adata
    truth = SyntheticTruth(
        conditions=conditions,
        cell_types=cts,
        genes=genes,
        log_proportions=logq,
        expected_log1p=np.log1p(1e4 * np.exp(logq)),
        lfc=logq - logq[:1],
        effects=effects,
        interactions=interactions,
        targets={s: (genes[t] if t >= 0 else s) for s, t in zip(singles, tgt_idx, strict=True)},
        target_genes_measured=target_genes_measured,
        library_size=library,
        dispersion=phi,
        combinations={c: (singles[a], singles[b]) for c, (a, b) in zip(combos, pairs, strict=True)},
    )
    return adata, truth
