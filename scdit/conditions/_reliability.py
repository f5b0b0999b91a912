"""How far perturbation features predict perturbation effects: the guidance of unseen ones.

A model places a perturbation it never saw through its features (a user table, or the
data-derived description of a measured target gene, :func:`data_features`). Whether that
placement carries information is a property of the data, and it can be measured on the
perturbations seen in training without refitting: predict each one's effect from the others
with a kernel regression on the features (leave one out), and correlate the predictions with
the real effects. The reliability is the evidence that this correlation is positive: 0 up to
:data:`Z_LOW` jackknife standard errors above 0, 1 from :data:`Z_HIGH` on, linear between.
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

#: Fewest seen single perturbations with features for the calibration to be estimated; with
#: fewer, the scale is 0 (no evidence that the features predict effects).
MIN_FEATURED = 3
#: Standard errors above 0 of the leave-one-out correlation below which the scale is 0.
Z_LOW = 1.0
#: Standard errors above 0 of the leave-one-out correlation from which the scale is 1 (linear
#: from :data:`Z_LOW`).
Z_HIGH = 3.0
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
        ``"scale"``: ``clip((z − Z_LOW) / (Z_HIGH − Z_LOW), 0, 1)`` with ``z = ρ / se``, ``ρ``
        the correlation of the leave-one-out predictions with the real effects (over all
        featured perturbations and genes) and ``se`` its jackknife standard error over the
        featured perturbations; ``"n"``: featured single perturbations used; where
        estimated, also ``"correlation"`` (``ρ``), ``"se"``, ``"z"``, ``"slope"`` (the real
        effects regressed on the predictions through the origin) and ``"bandwidth"``.
        ``scale`` is 0 with fewer than :data:`MIN_FEATURED` featured perturbations or no
        control cells.

    Notes
    -----
    For featured single perturbation ``i`` with effect ``E_i`` (mean log1p minus the control
    mean, over ``genes`` without the featured targets' own genes), the prediction is the
    kernel average ``Σ_j w_ij E_j`` over the other featured perturbations, ``w_ij ∝
    exp(−(d_ij − min_j d_ij) / h)`` with ``d`` the mean squared difference of standardised
    features and ``h`` the median nearest-neighbour ``d``. Both it and ``E_i`` are centred on
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
    F = table[[index[a] for a in featured]]
    sq = (F * F).sum(1)

    def distances(r: slice) -> np.ndarray:  # (rows, n); the own column set to inf
        d = np.maximum(sq[r, None] + sq[None, :] - 2.0 * F[r] @ F.T, 0.0) / F.shape[1]
        d[np.arange(r.stop - r.start), np.arange(r.start, r.stop)] = np.inf
        return d

    blocks = [slice(s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]
    nearest = np.concatenate([distances(r).min(1) for r in blocks])  # (n,)
    h = float(np.median(nearest))  # local: about the distance to a nearest neighbour
    if not h > 0:  # most rows have an exact duplicate: the scale of the other distances
        first = distances(blocks[0])
        positive = first[np.isfinite(first) & (first > 0)]
        h = float(np.median(positive)) if positive.size else 1.0
    num, pp, yy = np.empty(n), np.empty(n), np.empty(n)
    for r in blocks:
        W = np.exp(-(distances(r) - nearest[r, None]) / h)  # own column: exp(-inf) = 0
        centre = (total[None, :] - E[r]) / (n - 1)  # the other featured perturbations' mean
        P = (W / W.sum(1, keepdims=True)) @ E - centre  # leave-one-out predictions
        Y = E[r] - centre
        num[r], pp[r], yy[r] = (P * Y).sum(1), (P * P).sum(1), (Y * Y).sum(1)
    out = {"n": n, "bandwidth": h}
    if pp.sum() <= 1e-12 * max(yy.sum(), 1e-300) or yy.sum() <= 0:
        return {"scale": 0.0, **out}

    def corr(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return a / np.sqrt(np.maximum(b * c, 1e-300))

    rho = float(corr(num.sum(), pp.sum(), yy.sum()))
    jack = corr(num.sum() - num, pp.sum() - pp, yy.sum() - yy)  # without each one
    se = float(np.sqrt((n - 1) / n * ((jack - jack.mean()) ** 2).sum()))
    z = rho / se if se > 0 else (np.inf if rho > 0 else 0.0)
    scale = float(np.clip((z - Z_LOW) / (Z_HIGH - Z_LOW), 0.0, 1.0))
    return {"scale": scale, "correlation": rho, "se": se, "z": float(z),
            "slope": float(num.sum() / pp.sum()), **out}
