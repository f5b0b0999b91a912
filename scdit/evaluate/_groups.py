"""Per-(condition, context) groups of cells in log1p space, matched by order-free labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from ..data import canonical_label, check_expression, get_matrix, preview, to_log1p
from ._de import group_stats

Key = tuple  # (condition, context)


def align_genes(adata: AnnData, var_names: pd.Index, name: str) -> AnnData:
    """Subset/reorder ``adata`` to ``var_names``; ValueError listing genes it lacks."""
    if adata.var_names.equals(var_names):
        return adata
    missing = var_names[~var_names.isin(adata.var_names)]
    if len(missing):
        raise ValueError(
            f"`{name}` lacks {len(missing)} of the {len(var_names)} genes of `real`: "
            f"[{preview(missing)}]."
        )
    return adata[:, var_names]


@dataclass
class GroupedData:
    """Log1p expression of one AnnData with per-(condition, context) statistics.

    ``keys`` hold canonical condition labels (members sorted, see
    :func:`scdit.data.canonical_label`) when the data were grouped with a control label;
    ``written`` maps each of them to the label as first written in the data.
    """

    X: object  # log1p matrix, dense or CSR
    keys: list  # list of (condition, context)
    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray | None
    codes: np.ndarray
    written: dict = field(default_factory=dict)
    index: dict = field(init=False)

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}

    def mean_of(self, key: Key) -> np.ndarray | None:
        """Mean of the group ``key``, or None when it has no cells."""
        i = self.index.get(key)
        return None if i is None else self.mean[i]

    def cells(self, key: Key) -> np.ndarray:
        """Row positions of the cells of group ``key``."""
        return np.flatnonzero(self.codes == self.index[key])

    def label(self, condition: str) -> str:
        """The condition as written in the data (its canonical form if never written)."""
        return self.written.get(condition, condition)


def canonical_labels(labels, control: str | None, separator: str | None) -> tuple[np.ndarray, dict]:
    """Canonical form of every label, and canonical → first written form.

    With ``control=None`` the labels are returned as written (no canonicalisation).
    """
    labels = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    uniq = pd.unique(labels.to_numpy())
    if control is None:
        return labels.to_numpy(), {u: u for u in uniq}
    canon = {u: canonical_label(u, control, separator) for u in uniq}
    written: dict[str, str] = {}
    for u in uniq:
        written.setdefault(canon[u], u)
    return labels.map(canon).to_numpy(), written


def group_data(
    adata: AnnData,
    condition_key: str,
    covariate_key: str | None = None,
    *,
    layer: str | None = None,
    with_var: bool = False,
    name: str = "adata",
    control: str | None = None,
    separator: str | None = "+",
) -> GroupedData:
    """Convert ``adata`` to log1p (auto-detected) and compute per-group means (and variances).

    Parameters
    ----------
    adata
        Cells with ``obs[condition_key]`` (and ``obs[covariate_key]``).
    condition_key, covariate_key
        ``obs`` columns of the condition and of the optional context.
    layer
        Layer to use instead of ``.X``.
    with_var
        Also compute per-group variances.
    name
        Name of ``adata`` in error messages.
    control, separator
        With a control label, conditions are grouped by their canonical label, so ``"B+A"``
        and ``"A+B"`` are one group (order-free); without, by the label as written.

    Returns
    -------
    The :class:`GroupedData`.
    """
    for key in (condition_key, covariate_key):
        if key is not None and key not in adata.obs:
            raise KeyError(f"`{name}.obs` has no column {key!r}.")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"`{name}` has no layer {layer!r}; layers: {list(adata.layers)}.")
    X = get_matrix(adata, layer, name=f"`{name}`")
    X = to_log1p(X, check_expression(X, where=f"`{name}`.X" if layer is None
                                     else f"`{name}`.layers[{layer!r}]"))
    cond, written = canonical_labels(adata.obs[condition_key].to_numpy(), control, separator)
    if covariate_key is None:
        ctx = np.full(len(cond), None, dtype=object)
    else:
        ctx = adata.obs[covariate_key].astype(str).to_numpy().astype(object)
    pairs = pd.MultiIndex.from_arrays([cond, ctx]) if covariate_key else pd.Index(cond)
    codes, uniq = pd.factorize(pairs, sort=True)
    keys = list(uniq) if covariate_key else [(c, None) for c in uniq]
    n, mean, var = group_stats(X, codes, len(keys), with_var=with_var)
    return GroupedData(X=X, keys=keys, n=n, mean=mean, var=var, codes=codes, written=written)
