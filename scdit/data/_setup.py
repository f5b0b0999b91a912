"""Input validation performed before any training starts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._labels import detect_control
from ._representation import Representation, detect_representation


@dataclass(frozen=True)
class SetupInfo:
    """What validation learned about the input."""

    control: str
    representation: Representation
    conditions: tuple[str, ...]
    n_cells_per_condition: dict[str, int]


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]`` with a clear error for unknown layers."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty (None); pass layer='<name>' to read a layer.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found; available layers: {sorted(adata.layers.keys())}. "
            "Pass layer=None to use adata.X."
        )
    return adata.layers[layer]


def condition_labels(adata: AnnData, condition_key: str) -> pd.Series:
    """Validated condition labels as a string Series (errors for missing keys, NaN, non-strings)."""
    if condition_key not in adata.obs.columns:
        raise KeyError(
            f"condition_key={condition_key!r} is not a column of adata.obs; available columns: "
            f"{list(adata.obs.columns)}. Pass the column holding each cell's perturbation label."
        )
    col = adata.obs[condition_key]
    n_na = int(col.isna().sum())
    if n_na:
        raise ValueError(
            f"adata.obs[{condition_key!r}] has {n_na} missing (NaN) labels; label every cell "
            "(e.g. the control label for unperturbed cells) or drop those cells."
        )
    values = col.astype(object).to_numpy()
    bad = [v for v in values[:10000] if not isinstance(v, str)]
    if bad:
        raise TypeError(
            f"adata.obs[{condition_key!r}] must hold string labels, found {type(bad[0]).__name__} "
            f"values such as {bad[0]!r}. Convert them, e.g. "
            f"adata.obs[{condition_key!r}] = adata.obs[{condition_key!r}].astype(str)."
        )
    return pd.Series(values.astype(str), index=adata.obs_names, name=condition_key)


def check_values(X, *, where: str = "adata.X") -> None:
    """Raise if ``X`` has NaN, inf or negative values, saying how many and where."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    n_nan = int(np.isnan(data).sum())
    n_inf = int(np.isinf(data).sum())
    n_neg = int((data < 0).sum())
    if n_nan or n_inf or n_neg:
        dense_first = _first_bad(X)
        raise ValueError(
            f"{where} holds {n_nan} NaN, {n_inf} infinite and {n_neg} negative values "
            f"(first at cell {dense_first[0]}, gene {dense_first[1]}). Expression must be raw "
            "counts or log1p-normalised (non-negative, finite); scaled/centred data is not "
            "supported: pass the unscaled layer with layer='...'."
        )


def _first_bad(X) -> tuple[int, int]:
    if sp.issparse(X):
        coo = sp.coo_matrix(X)
        bad = ~np.isfinite(coo.data) | (coo.data < 0)
        i = int(np.argmax(bad))
        return int(coo.row[i]), int(coo.col[i])
    arr = np.asarray(X)
    idx = np.argwhere(~np.isfinite(arr) | (arr < 0))
    return (int(idx[0][0]), int(idx[0][1])) if len(idx) else (-1, -1)


def validate(
    adata: AnnData,
    condition_key: str,
    *,
    control: str | None = None,
    covariate_keys: Sequence[str] = (),
    layer: str | None = None,
    representation: Representation | None = None,
    min_cells: int = 10,
) -> SetupInfo:
    """Validate an AnnData for training; never modifies it.

    Raises clear errors for an empty AnnData, a missing ``condition_key`` or covariate key,
    non-string or missing labels, absent control cells, NaN/inf/negative values, duplicated gene
    names, and non-integer data where counts were requested. Warns about conditions with fewer
    than ``min_cells`` cells.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); "
            "pass a dataset with cells and genes."
        )
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise ValueError(f"Gene names are not unique (e.g. {dup}); call adata.var_names_make_unique().")
    labels = condition_labels(adata, condition_key)
    for key in covariate_keys:
        if key not in adata.obs.columns:
            raise KeyError(
                f"covariate key {key!r} is not a column of adata.obs; available columns: "
                f"{list(adata.obs.columns)}."
            )
        if adata.obs[key].isna().any():
            raise ValueError(f"adata.obs[{key!r}] has missing values; fill or drop them.")
    control = detect_control(labels.to_numpy(), control)
    X = get_matrix(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    check_values(X, where=where)
    detected = detect_representation(X)
    if representation == "counts" and detected != "counts":
        raise ValueError(
            f"Raw counts are required but {where} holds non-integer values (it looks "
            "log-normalised). Pass the raw counts, e.g. layer='counts', or use "
            "representation='log1p'."
        )
    if representation not in (None, "counts", "log1p"):
        raise ValueError(f"representation must be 'counts', 'log1p' or None, got {representation!r}.")
    counts = labels.value_counts()
    few = counts[counts < min_cells]
    if len(few):
        warnings.warn(
            f"{len(few)} condition(s) have fewer than {min_cells} cells "
            f"({', '.join(f'{k!r}: {v}' for k, v in few.head(10).items())}); their predictions "
            "will be unreliable.",
            UserWarning,
            stacklevel=3,
        )
    return SetupInfo(
        control=control,
        representation=representation or detected,
        conditions=tuple(sorted(counts.index)),
        n_cells_per_condition={str(k): int(v) for k, v in counts.items()},
    )
