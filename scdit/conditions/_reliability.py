"""How far perturbation features predict perturbation effects: the guidance of unseen ones.

A model places a perturbation it never saw through its features (a user table, or the
data-derived description of a measured target gene, :func:`data_features`). Whether that
placement carries information is a property of the data, and it can be measured on the
perturbations seen in training without refitting: predict each one's effect from the others
with a kernel regression on the features (leave one out), and correlate the predictions with
the real effects. The reliability is the evidence that this correlation beats features that
say nothing (the same effects with the features of randomly permuted perturbations): 0 up to
:data:`Z_LOW` null standard deviations above the null's mean, 1 from :data:`Z_HIGH` on,
linear between.
It is evidence, not a calibration: the network uses the features in its own way, and where
they carry information the plain conditional model beat a shrunk one (the simulated screen
with gene programmes, benchmarks/archive), while where they do not (the Papalexi screen) the
unconditional model beat it. :class:`~scdit.ScDiT` uses it as the default classifier-free
guidance scale of perturbations known only through their features: the generated cells of
an unseen perturbation move from the unconditional model (the training cells' mixture)
towards the feature-based conditional model only as far as the features have earned on the
seen ones (see :class:`scdit.SamplingConfig`).

Effects are taken in log1p expression over the given genes, relative to the average effect of
the other featured perturbations, with the featured perturbations' own target genes left out,
whose on-target change is the target prior's (:func:`target_prior`), not the features'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..data import split_label

#: Fewest seen single perturbations with features for the evidence to be measured; with
#: fewer, the scale is 0 (no evidence that the features predict effects).
MIN_FEATURED = 3
#: Standard deviations of the permutation null above its mean below which the leave-one-out
#: correlation gives scale 0 (features unrelated to the effects pass it about 2 % of the time).
Z_LOW = 2.0
#: Standard deviations above the null's mean from which the scale is 1 (linear from
#: :data:`Z_LOW`).
Z_HIGH = 3.0
#: Feature permutations that give the null distribution of the correlation (fewer, down to
#: :data:`MIN_PERMUTATIONS`, where ``n² × (genes + features)`` exceeds
#: :data:`PERMUTATION_BUDGET` for ``n`` featured perturbations).
PERMUTATIONS = 200
#: Fewest feature permutations.
MIN_PERMUTATIONS = 10
#: Most featured perturbations the measurement uses (a seeded random subset beyond): bounds
#: its cost on genome-scale screens.
MAX_FEATURED = 2000
#: Multiply-adds the permutations may take (about a second per 10⁹ on a laptop core).
PERMUTATION_BUDGET = 4 * 10**9
#: Rows whose distances give the bandwidth where most nearest distances are 0.
BANDWIDTH_ROWS = 256
#: Rows of the leave-one-out kernel computed at a time (bounds the memory to a few
#: ``CHUNK × n`` and ``CHUNK × genes`` blocks for ``n`` featured perturbations).
CHUNK = 1024


def feature_reliability(X_log, var_names: Sequence[str], labels: Sequence[str], control: str,
                        table: np.ndarray, atoms: Sequence[str], *, separator: str = "+",
                        genes: Sequence[int] | None = None) -> dict:
    """Evidence that feature-based effect predictions correlate with the real effects (leave
    one out), as a guidance scale in ``[0, 1]``.

    Parameters
    ----------
    X_log
        Cells × genes, log1p (dense or sparse): the cells the model is fitted on.
    var_names
        Gene names of the columns of ``X_log``.
    labels
        Condition label of every cell (combinations joined by ``separator``; a single written
        with the control as a second member, ``"A+ctrl"``, counts as ``A``).
    control
        The control label.
    table
        Standardised features of ``atoms``, ``(len(atoms), F)`` as from :func:`feature_table`;
        rows that are exactly zero mean "no features" and are left out.
    atoms
        The perturbations seen in training, in the order of ``table``'s first rows.
    separator
        Joins the members of a combination.
    genes
        Columns the effects are measured on (default: all).

    Returns
    -------
    dict
        ``"scale"``: ``clip((z − Z_LOW) / (Z_HIGH − Z_LOW), 0, 1)`` with ``z = (ρ − m) / s``,
        ``ρ`` the correlation of the leave-one-out predictions with the real effects (over
        all featured perturbations and genes), ``m`` and ``s`` the mean and SD of ``ρ`` over
        random permutations of the features among the featured perturbations (seeded: the
        result is deterministic); ``"n"``: featured single perturbations used; where
        estimated, also ``"correlation"`` (``ρ``), ``"null_mean"``, ``"null_sd"``, ``"z"``,
        ``"permutations"``, ``"slope"`` (the real effects regressed on the predictions
        through the origin) and ``"bandwidth"``.
        ``scale`` is 0 with fewer than :data:`MIN_FEATURED` featured perturbations or no
        control cells. At most :data:`MAX_FEATURED` featured perturbations (a seeded random
        subset) are used.

    Notes
    -----
    For featured single perturbation ``i`` with effect ``E_i`` (mean log1p minus the control
    mean, over ``genes`` without the featured targets' own genes), the prediction is the
    kernel average ``Σ_j w_ij E_j`` over the other featured perturbations, ``w_ij ∝
    exp(−(d_ij − min_j d_ij) / h)`` with ``d`` the mean squared difference of standardised
    features and ``h`` the median nearest-neighbour ``d`` (where that is 0, most rows having
    an exact duplicate, the median positive ``d`` of the first :data:`BANDWIDTH_ROWS` rows).
    Both it and ``E_i`` are centred on
    the plain average of the other featured perturbations' effects (centring on an average
    that includes ``E_i`` would make every other perturbation look anti-correlated with it);
    ``ρ = Σ_i ⟨P_i, Y_i⟩ / (Σ_i ‖P_i‖² Σ_i ‖Y_i‖²)^½``.
    """
    labels = np.asarray(labels).astype(str)
    names = [str(v) for v in var_names]
    cols = np.arange(len(names)) if genes is None else np.asarray(genes, dtype=int)
    table = np.asarray(table, dtype=np.float64)
    index = {a: i for i, a in enumerate(atoms)}
    single = {}  # label -> its one member (singles only)
    for lab in np.unique(labels):
        members = split_label(lab, control, separator)
        if len(members) == 1:
            single[lab] = members[0]
    featured = sorted({m for m in single.values()
                       if m in index and np.any(table[index[m]] != 0)})
    if len(featured) > MAX_FEATURED:
        pick = np.random.default_rng(0).choice(len(featured), MAX_FEATURED, replace=False)
        featured = [featured[i] for i in np.sort(pick)]
    n = len(featured)
    if not (labels == control).any() or n < MIN_FEATURED:
        return {"scale": 0.0, "n": n}
    position = {g: j for j, g in enumerate(names)}
    keep = np.setdiff1d(cols, [position[a] for a in featured if a in position])
    code = {a: i + 1 for i, a in enumerate(featured)}  # row 0: control
    group = np.array([0 if v == control else code.get(single.get(v, ""), -1) for v in labels])
    rows = np.flatnonzero(group >= 0)
    member = sp.csr_matrix((np.ones(len(rows), np.float32), (group[rows], rows)),
                           shape=(n + 1, len(labels)))
    sums = member @ X_log  # (1 + n, all genes): group sums without copying the cells
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums)[:, keep].astype(np.float64)
    means = sums / np.asarray(member.sum(1), dtype=np.float64).reshape(-1, 1)
    E = means[1:] - means[0]  # (n, G)
    total = E.sum(0)
    F0 = table[[index[a] for a in featured]]
    blocks = [slice(s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]

    def distances(F: np.ndarray, sq: np.ndarray, r: slice) -> np.ndarray:
        """(rows, n) mean squared feature differences; the own column set to inf."""
        d = np.maximum(sq[r, None] + sq[None, :] - 2.0 * F[r] @ F.T, 0.0) / F.shape[1]
        d[np.arange(r.stop - r.start), np.arange(r.start, r.stop)] = np.inf
        return d

    sq0 = (F0 * F0).sum(1)
    nearest0 = np.concatenate([distances(F0, sq0, r).min(1) for r in blocks])  # (n,)
    h = float(np.median(nearest0))  # local: about the distance to a nearest neighbour
    if not h > 0:  # most rows have an exact duplicate: the scale of the other distances,
        sample = distances(F0, sq0, slice(0, min(n, BANDWIDTH_ROWS)))  # on fixed rows
        positive = sample[np.isfinite(sample) & (sample > 0)]
        h = float(np.median(positive)) if positive.size else 1.0

    def loo(F: np.ndarray) -> tuple[float, float, float]:
        """Σ⟨P_i, Y_i⟩, Σ‖P_i‖², Σ‖Y_i‖² of the leave-one-out predictions from features F."""
        sq = (F * F).sum(1)
        num = pp = yy = 0.0
        for r in blocks:
            d = distances(F, sq, r)
            W = np.exp(-(d - d.min(1, keepdims=True)) / h)  # own column: exp(-inf) = 0
            centre = (total[None, :] - E[r]) / (n - 1)  # the other featured ones' mean
            P = (W / W.sum(1, keepdims=True)) @ E - centre  # leave-one-out predictions
            Y = E[r] - centre
            num, pp, yy = num + (P * Y).sum(), pp + (P * P).sum(), yy + (Y * Y).sum()
        return float(num), float(pp), float(yy)

    num, pp, yy = loo(F0)
    out = {"n": n, "bandwidth": h}
    if pp <= 1e-12 * max(yy, 1e-300) or yy <= 0:
        return {"scale": 0.0, **out}
    rho = num / np.sqrt(pp * yy)
    # the null: the same effects with the features of randomly permuted perturbations
    rng = np.random.default_rng(0)
    size = n * n * (E.shape[1] + F0.shape[1])
    n_perm = int(np.clip(PERMUTATION_BUDGET // max(size, 1), MIN_PERMUTATIONS, PERMUTATIONS))
    null = []
    for _ in range(n_perm):
        a, b, c = loo(F0[rng.permutation(n)])
        null.append(a / np.sqrt(b * c) if b > 0 and c > 0 else 0.0)
    null = np.asarray(null)
    sd = float(null.std())
    z = (rho - float(null.mean())) / sd if sd > 0 else (np.inf if rho > null.mean() else -np.inf)
    scale = float(np.clip((z - Z_LOW) / (Z_HIGH - Z_LOW), 0.0, 1.0))
    return {"scale": scale, "correlation": float(rho), "null_mean": float(null.mean()),
            "null_sd": sd, "z": float(z), "permutations": n_perm,
            "slope": float(num / pp), **out}
