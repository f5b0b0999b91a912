"""Input validation performed before any training starts."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._labels import check_labels, control_like, detect_control
from ._representation import Representation, detect_representation


@dataclass(frozen=True)
class SetupInfo:
    """What validation learned about the input."""

    control: str
    representation: Representation
    conditions: tuple[str, ...]
    n_cells_per_condition: dict[str, int]


def get_matrix(adata: AnnData, layer: str | None, *, name: str = "adata"):
    """Return ``adata.X`` or ``adata.layers[layer]`` with a clear error for unknown layers and
    for backed AnnData (``read_h5ad(..., backed="r")``, whose ``X`` stays on disk)."""
    if adata.isbacked:
        raise ValueError(
            f"{name} is backed (opened with read_h5ad(..., backed='r'); its X stays in "
            f"{adata.filename}); scdit needs it in memory: load it with {name} = "
            f"{name}.to_memory() (or a subset: {name}[rows].to_memory())."
        )
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
    if not isinstance(condition_key, str):
        raise TypeError(f"condition_key must be the name of an obs column (a string), got "
                        f"{condition_key!r}.")
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
    """Raise if ``X`` is not numeric or has NaN, inf or negative values, saying how many, in how
    many cells and genes, and where the first is."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise TypeError(f"{where} holds {data.dtype} values; expression must be numeric (counts or "
                        f"log1p). Convert it, e.g. X.astype(np.float32).")
    n_nan = int(np.isnan(data).sum())
    n_inf = int(np.isinf(data).sum())
    n_neg = int((data < 0).sum())
    if n_nan or n_inf or n_neg:
        rows, cols = _bad_positions(X)
        raise ValueError(
            f"{where} holds {n_nan} NaN, {n_inf} infinite and {n_neg} negative values in "
            f"{len(np.unique(rows))} cell(s) and {len(np.unique(cols))} gene(s) (first at cell "
            f"{rows[0]}, gene {cols[0]}). Expression must be raw counts or log1p-normalised "
            "(non-negative, finite); scaled/centred data is not supported: pass the unscaled "
            "layer with layer='...'."
        )


def _bad_positions(X) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the NaN, infinite or negative entries of ``X``, in row order."""
    if sp.issparse(X):
        coo = sp.coo_matrix(X)
        bad = ~np.isfinite(coo.data) | (coo.data < 0)
        order = np.lexsort((coo.col[bad], coo.row[bad]))
        return coo.row[bad][order], coo.col[bad][order]
    idx = np.argwhere(~np.isfinite(np.asarray(X)) | (np.asarray(X) < 0))
    return idx[:, 0], idx[:, 1]


#: Largest value accepted as log1p expression. ``log1p(normalize_total(target_sum=1e4))`` never
#: exceeds ``log1p(1e4) ≈ 9.2`` (a cell whose counts all fall on one gene), ``log1p`` of CPM
#: ``log1p(1e6) ≈ 13.8``, ``log2(CPM + 1)`` 19.9; 25 (``expm1(25) ≈ 7e10``) leaves a margin for
#: other log normalisations and is still far below normalised-but-unlogged data (hundreds).
LOG1P_MAX = 25.0
#: Above this (``log1p(3.3e6)``, beyond log1p of CPM), log1p data get a warning.
LOG1P_WARN = 15.0
#: Non-integer data whose non-zero values are at least this share of integers look like
#: partially corrected counts (e.g. SoupX), not log1p (a log1p value is never an integer).
INTEGER_SHARE = 0.5


def _stored(X, max_values: int = 1_000_000) -> np.ndarray:
    """Non-zero stored values of ``X`` (a deterministic stride subsample of at most
    ``max_values``)."""
    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if vals.size > max_values:
        vals = vals[:: int(np.ceil(vals.size / max_values))]
    return vals[vals != 0]


def _row_stat(X, how: str) -> np.ndarray:
    out = X.sum(axis=1) if how == "sum" else X.max(axis=1)
    return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float64).ravel()


def check_expression(X, representation: Representation | None = None, *,
                     where: str = "adata.X") -> Representation:
    """Validate an expression matrix and return its representation (``representation`` or the
    detected one); the one check of fit, ``predict(source=)`` and ``evaluate`` inputs.

    Errors (``ValueError``, naming ``where`` and how to fix it): non-numeric (``TypeError``),
    NaN, infinite or negative values; non-integer values where ``representation="counts"``;
    integers only where ``"log1p"`` is claimed; data taken as log1p whose rows all sum to one
    value while their maxima differ (``normalize_total`` without ``log1p``); data taken as log1p
    with values above :data:`LOG1P_MAX` (normalised but not logged, non-integer corrected
    counts, or corrupted). Warnings (``UserWarning``): log1p values above :data:`LOG1P_WARN`;
    non-integer data of which at least :data:`INTEGER_SHARE` of the non-zero values are
    integers (partially corrected counts).

    Parameters
    ----------
    X
        Cells × genes, dense or scipy sparse (in memory).
    representation
        ``"counts"``, ``"log1p"`` or ``None`` (detect).
    where
        Name of the matrix in messages, e.g. ``"adata.layers['counts']"``.

    Returns
    -------
    ``"counts"`` or ``"log1p"``.
    """
    if representation not in (None, "counts", "log1p"):
        raise ValueError(f"representation must be 'counts', 'log1p' or None, got "
                         f"{representation!r}.")
    check_values(X, where=where)
    detected = detect_representation(X)
    vals = _stored(X)
    vmax = float(vals.max()) if vals.size else 0.0
    if representation == "counts" and detected != "counts":
        corrected = (f" Values up to {vmax:.4g} suggest non-integer corrected counts (e.g. "
                     "SoupX, DecontX): round them (np.rint) into a layer and pass it, or pass "
                     "the uncorrected counts." if vmax > LOG1P_MAX else "")
        raise ValueError(
            f"Raw counts are required but {where} holds non-integer values (it looks "
            "log-normalised). Pass the raw counts, e.g. layer='counts', or use "
            f"representation='log1p'.{corrected}"
        )
    rep = representation or detected
    if rep != "log1p":
        return rep
    if detected == "counts" and vmax > 0:
        raise ValueError(
            f"representation='log1p' but {where} holds only non-negative integers (up to "
            f"{vmax:.4g}): raw counts, not log1p values. Pass representation='counts' (or None "
            "to detect it), or the log1p layer."
        )
    sums = _row_stat(X, "sum")
    live = sums > 0
    if live.sum() >= 2:
        s, m = sums[live], _row_stat(X, "max")[live]
        if np.ptp(s) <= 1e-3 * s.max() and np.ptp(m) > 1e-6 * m.max():
            raise ValueError(
                f"Every cell of {where} sums to {np.median(s):.6g}: the data look library-"
                "normalised (sc.pp.normalize_total) but not log-transformed. Run "
                "sc.pp.log1p on them (on a copy), or pass the raw counts (layer='counts')."
            )
    if vmax > LOG1P_MAX:
        raise ValueError(
            f"{where} holds non-integer values up to {vmax:.4g}, far above log1p-normalised "
            f"expression (log1p(normalize_total(1e4)) stays below log1p(1e4) ≈ 9.2; scdit "
            f"refuses values above {LOG1P_MAX:g}). If the data are normalised but not "
            "log-transformed, run sc.pp.log1p on them (on a copy); if they are non-integer "
            "corrected counts (e.g. SoupX, DecontX), round them (np.rint) and pass them as "
            "counts, or pass the raw counts (layer='counts')."
        )
    share = float(np.mean(vals == np.round(vals))) if vals.size else 0.0
    if share >= INTEGER_SHARE:
        warnings.warn(
            f"{where} is taken as log1p, but {share:.0%} of its non-zero values are integers "
            "(a log1p value never is): it looks like partially corrected counts (e.g. SoupX). "
            "Round them (np.rint) and pass them as counts, or pass the raw counts "
            "(layer='counts').", UserWarning, stacklevel=3)
    elif vmax > LOG1P_WARN:
        warnings.warn(
            f"{where} is taken as log1p but holds values up to {vmax:.4g}, above "
            f"log1p(normalize_total) (≤ log1p(1e4) ≈ 9.2 at scdit's target sum, ≤ 13.8 for CPM). "
            "Check that it is log-normalised (sc.pp.normalize_total then sc.pp.log1p); "
            "predictions come back on the same scale.", UserWarning, stacklevel=3)
    return rep


def covariate_keys_arg(covariate_keys, condition_key: str | None = None) -> tuple[str, ...]:
    """``covariate_keys`` as a tuple of distinct ``obs`` column names (a single string is one
    key; ``None`` is none), with clear errors for other types, repeats and the condition key."""
    if covariate_keys is None:
        return ()
    if isinstance(covariate_keys, str):
        return (covariate_keys,)
    if not isinstance(covariate_keys, Iterable) or isinstance(covariate_keys, Mapping):
        raise TypeError(f"covariate_keys must be an obs column name or a list of them, got "
                        f"{type(covariate_keys).__name__} {covariate_keys!r}.")
    keys = tuple(covariate_keys)
    bad = [k for k in keys if not isinstance(k, str)]
    if bad:
        raise TypeError(f"covariate_keys must be obs column names (strings), got {bad[:5]}.")
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"covariate_keys repeats {repeated}; give each obs column once.")
    if condition_key is not None and condition_key in keys:
        raise ValueError(f"covariate_keys contains the condition key {condition_key!r}; "
                         "covariates are the context (cell type, batch, ...), not the "
                         "perturbation.")
    return keys


def validate(
    adata: AnnData,
    condition_key: str,
    *,
    control: str | None = None,
    covariate_keys: Sequence[str] | str = (),
    layer: str | None = None,
    representation: Representation | None = None,
    min_cells: int = 10,
    separator: str | None = "+",
    X=None,
) -> SetupInfo:
    """Validate an AnnData for training; never modifies it.

    Raises clear errors for an empty or backed AnnData, a missing ``condition_key`` or covariate
    key, non-string, missing or malformed labels (:func:`scdit.data.check_labels`), absent or
    ambiguous control cells, and expression that :func:`check_expression` refuses (NaN, inf,
    negative, normalised but not logged, non-integer counts, ...). Warns about conditions with
    fewer than ``min_cells`` cells and, with an explicit ``control``, about other labels that
    look like controls (they are treated as perturbations). ``X``: the expression to check
    instead of ``adata``'s (rows of an on-disk store, whose ``adata`` holds ``obs`` only).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); "
            "pass a dataset with cells and genes."
        )
    if X is None:
        X = get_matrix(adata, layer)
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise ValueError(f"Gene names are not unique (e.g. {dup}); call adata.var_names_make_unique().")
    if separator is not None and not isinstance(separator, str):
        raise TypeError(f"separator must be a string, got {separator!r}.")
    labels = condition_labels(adata, condition_key)
    for key in covariate_keys_arg(covariate_keys, condition_key):
        if key not in adata.obs.columns:
            raise KeyError(
                f"covariate key {key!r} is not a column of adata.obs; available columns: "
                f"{list(adata.obs.columns)}."
            )
        if adata.obs[key].isna().any():
            raise ValueError(f"adata.obs[{key!r}] has missing values; fill or drop them.")
    check_labels(labels.to_numpy(), separator, where=f"adata.obs[{condition_key!r}]")
    given = control
    control = detect_control(labels.to_numpy(), control)
    others = [c for c in control_like(labels.unique()) if c != control]
    if given is not None and others:
        warnings.warn(
            f"control={control!r}, but {others} in adata.obs[{condition_key!r}] look like "
            "control labels too; they are treated as perturbations. Relabel them if they are "
            "unperturbed cells.", UserWarning, stacklevel=3)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    representation = check_expression(X, representation, where=where)
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
        representation=representation,
        conditions=tuple(sorted(counts.index)),
        n_cells_per_condition={str(k): int(v) for k, v in counts.items()},
    )
