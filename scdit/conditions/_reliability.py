"""How far perturbation features predict perturbation effects: the guidance of unseen ones.

A model places a perturbation it never saw through its features (a user table, or the
data-derived description of a measured target gene, :func:`data_features`). Whether that
placement carries information is a property of the data, and it can be measured on the
perturbations seen in training without refitting: predict each one's effect from the others
with a kernel regression on the features (leave one out), and regress the real effects on
those predictions through the origin. The slope, clipped to ``[0, 1]``, is the calibration of
a feature-based prediction (1: features place effects as well as the regression can use them;
0: no better than the average effect). :class:`~scdit.ScDiT` uses it as the default
classifier-free guidance scale of perturbations known only through their features, so the
generated cells of an unseen perturbation move from the unconditional model (the training
cells' mixture) towards the feature-based conditional model only as far as the features have
earned on the seen ones (see :class:`scdit.SamplingConfig`).

Effects are taken in log1p expression over the given genes, relative to the average effect of
the seen perturbations (the mean baseline), with the featured perturbations' own target genes
left out, whose on-target change is the target prior's (:func:`target_prior`), not the
features'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..data import split_label

#: Fewest seen single perturbations with features for the calibration to be estimated; with
#: fewer, the slope is 0 (no evidence that the features predict effects).
MIN_FEATURED = 3


def feature_reliability(X_log, var_names: Sequence[str], labels: Sequence[str], control: str,
                        table: np.ndarray, atoms: Sequence[str], *, separator: str = "+",
                        genes: Sequence[int] | None = None) -> dict:
    """Leave-one-out calibration slope of feature-based effect predictions.

    Parameters
    ----------
    X_log
        Training cells × genes, log1p (dense or sparse).
    var_names
        Gene names of the columns of ``X_log``.
    labels
        Condition label of every cell (combinations joined by ``separator``).
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
    ``{"scale": slope in [0, 1], "n": featured single perturbations used, "slope": the
    unclipped slope (absent where not estimated), "cosine": mean leave-one-out cosine of
    predicted and real effects, "bandwidth": the kernel's bandwidth}``; ``scale`` is 0 with
    fewer than :data:`MIN_FEATURED` featured perturbations.
    """
    labels = np.asarray(labels).astype(str)
    names = [str(v) for v in var_names]
    cols = np.arange(len(names)) if genes is None else np.asarray(genes, dtype=int)
    table = np.asarray(table, dtype=np.float64)
    singles = [a for a in np.unique(labels)
               if a != control and split_label(a, control, separator) == (a,)]
    index = {a: i for i, a in enumerate(atoms)}
    featured = [a for a in singles if a in index and np.any(table[index[a]] != 0)]
    if not (labels == control).any() or len(featured) < MIN_FEATURED:
        return {"scale": 0.0, "n": len(featured)}
    position = {g: j for j, g in enumerate(names)}
    keep = np.setdiff1d(cols, [position[a] for a in featured if a in position])
    groups = [control, *singles]
    code = {g: i for i, g in enumerate(groups)}
    rows = np.flatnonzero(np.isin(labels, groups))
    member = sp.csr_matrix((np.ones(len(rows), np.float32), (
        np.array([code[v] for v in labels[rows]]), rows)), shape=(len(groups), len(labels)))
    sums = member @ X_log  # (1 + N, all genes): group sums without copying the cells
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums, dtype=np.float64)
    means = sums[:, keep] / np.asarray(member.sum(1), dtype=np.float64).reshape(-1, 1)
    effects = means[1:] - means[0]  # (N, G)
    total, n_all = effects.sum(0), len(singles)
    E = effects[[code[a] - 1 for a in featured]]  # (n, G)
    # the mean baseline's effect without the left-out perturbation (centring with it would
    # make every other perturbation look anti-correlated with it)
    centre = (total[None, :] - E) / (n_all - 1)  # (n, G)
    F = table[[index[a] for a in featured]]
    sq = (F * F).sum(1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * F @ F.T, 0.0) / F.shape[1]  # (n, n)
    off = ~np.eye(len(featured), dtype=bool)
    nearest = np.where(off, d, np.inf).min(1)  # (n,)
    h = float(np.median(nearest))  # local: about the distance to a nearest neighbour
    h = h if h > 0 else float(np.median(d[off])) or 1.0
    W = np.where(off, np.exp(-(d - nearest[:, None]) / h), 0.0)
    P = (W / W.sum(1, keepdims=True)) @ E - centre  # leave-one-out predictions (n, G)
    Y = E - centre
    den = float((P * P).sum())
    if den <= 0:
        return {"scale": 0.0, "n": len(featured), "bandwidth": h}
    slope = float((P * Y).sum() / den)
    norms = np.linalg.norm(P, axis=1) * np.linalg.norm(Y, axis=1)
    cos = np.where(norms > 0, (P * Y).sum(1) / np.where(norms > 0, norms, 1.0), 0.0)
    return {"scale": float(np.clip(slope, 0.0, 1.0)), "n": len(featured), "slope": slope,
            "cosine": float(cos.mean()), "bandwidth": h}
