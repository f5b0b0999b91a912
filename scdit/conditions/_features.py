"""Perturbation features: a user table, or features derived from the expression data.

Features let the model place a perturbation it never saw: the condition encoder projects a
perturbation's feature vector into the conditioning space (see :class:`ConditionEncoder`).

The data-derived default, for genetic perturbations whose target gene is measured, describes a
gene by how it co-varies with the main axes of variation of the training cells: the Pearson
correlation of the gene's log1p expression with each of the top principal components of the
modelled genes, plus its mean and standard deviation. Genes that sit in the same expression
programme get similar vectors, which is what a knock-down or activation of the gene moves
first. The table covers every measured gene, so any measured gene can be predicted.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import split_label

FeatureInput = pd.DataFrame | Mapping | str | Path


def read_features(features: FeatureInput) -> pd.DataFrame:
    """A numeric DataFrame (index = perturbation names) from a DataFrame, dict or file path.

    Files: ``.csv``/``.tsv``/``.txt`` (first column = index), ``.parquet``, ``.h5ad`` (``X`` with
    ``obs_names`` as index), ``.npz``/``.json`` are not guessed. Rows must be unique, finite
    numbers.
    """
    if isinstance(features, pd.DataFrame):
        df = features.copy()
    elif isinstance(features, Mapping):
        try:
            df = pd.DataFrame.from_dict({str(k): np.asarray(v, dtype=np.float64).ravel()
                                         for k, v in features.items()}, orient="index")
        except (TypeError, ValueError) as err:
            raise ValueError("perturbation_features dict must map each perturbation name to a "
                             f"vector of numbers of the same length ({err}).") from err
    elif isinstance(features, (str, Path)):
        path = Path(features)
        if not path.exists():
            raise FileNotFoundError(f"perturbation_features file {path} does not exist.")
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(path, sep="," if suffix == ".csv" else "\t", index_col=0)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix == ".h5ad":
            import anndata as ad

            a = ad.read_h5ad(path)
            X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
            df = pd.DataFrame(X, index=a.obs_names)
        else:
            raise ValueError(f"Cannot read perturbation_features from {path.name!r}: use .csv, "
                             ".tsv, .txt, .parquet or .h5ad (or pass a DataFrame or dict).")
    else:
        raise TypeError("perturbation_features must be a DataFrame, a dict name → vector, a path, "
                        f"'auto' or False; got {type(features).__name__}.")
    df.index = df.index.astype(str)
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()].unique().tolist()[:10]
        raise ValueError(f"perturbation_features has duplicated names: {dup}.")
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise ValueError("perturbation_features is empty (needs ≥ 1 row and ≥ 1 column).")
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise ValueError(f"perturbation_features columns must be numeric; {non_numeric[:10]} are "
                         "not.")
    values = df.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(1)
    if bad.any():
        raise ValueError(f"perturbation_features has NaN/inf values in rows "
                         f"{df.index[bad].tolist()[:10]}; fill or drop them.")
    return df.astype(np.float64)


def data_features(X_log, var_names: Sequence[str], model_genes: Sequence[int] | None = None, *,
                  n_components: int = 32, max_cells: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Data-derived features of every measured gene (see the module docstring).

    Parameters
    ----------
    X_log
        Training cells × all genes, log1p (dense or sparse).
    var_names
        Gene names (the index of the result).
    model_genes
        Column indices the principal components are computed on (default all genes).
    n_components
        Number of principal components.
    max_cells, seed
        A random subset of at most ``max_cells`` cells is used.

    Returns
    -------
    DataFrame genes × (``n_components`` + 2): correlations with PC1..PCk, mean and SD.
    """
    n = X_log.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_cells), replace=False))
    X = X_log[rows]
    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, np.float64)
    cols = np.arange(X.shape[1]) if model_genes is None else np.asarray(model_genes)
    sub = X[:, cols]
    sub = sub.toarray() if sp.issparse(sub) else sub
    mu = sub.mean(0)
    sd = sub.std(0) + 1e-8
    Z = (sub - mu) / sd  # (n, g)
    k = int(max(1, min(n_components, min(Z.shape) - 1)))
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        U, S, _ = torch.svd_lowrank(torch.as_tensor(Z), q=min(k + 10, min(Z.shape)), niter=4)
    scores = (U[:, :k] * S[:k]).numpy()  # (n, k)
    scores = (scores - scores.mean(0)) / (scores.std(0) + 1e-12)
    m = X.shape[0]
    mean = np.asarray(X.mean(0)).ravel()
    sq = X.multiply(X) if sp.issparse(X) else X**2
    sdev = np.sqrt(np.maximum(np.asarray(sq.mean(0)).ravel() - mean**2, 0.0))
    cov = np.asarray(X.T @ scores) / m  # (G, k); scores are centred
    corr = cov / (sdev[:, None] + 1e-8)
    corr[sdev == 0] = 0.0
    data = np.column_stack([corr, mean, sdev])
    names = [f"pc{i + 1}_corr" for i in range(k)] + ["mean", "sd"]
    return pd.DataFrame(data, index=pd.Index([str(v) for v in var_names]), columns=names)


def check_rows(features: pd.DataFrame, seen: Sequence[str], source: str = "table") -> None:
    """Clear error listing the seen perturbations that have no row in ``features``."""
    missing = [a for a in seen if a not in features.index]
    if missing:
        raise ValueError(
            f"perturbation_features ({source}) has no row for {len(missing)} perturbation(s) "
            f"seen in training: {missing[:20]}{' ...' if len(missing) > 20 else ''}. Add rows for "
            "them (its index must hold perturbation names as written in condition_key, members "
            "of combinations separately), or pass perturbation_features=False."
        )


def feature_table(features: pd.DataFrame, seen: Sequence[str], *, source: str = "table",
                  fill_missing: bool = False) -> tuple[np.ndarray, list[str], dict]:
    """Standardised feature matrix for the seen atoms followed by all other rows.

    Columns are standardised with the mean and SD of the seen atoms that have a row (of every
    row when fewer than two seen atoms have one). Returns ``(table (n_rows, F) float32, featured
    names (unseen rows, in order), stats)``. Raises a clear error if seen perturbations are
    missing from ``features``, unless ``fill_missing``: then their rows are exactly zero, which
    the :class:`ConditionEncoder` reads as "no features" (they keep their learned residual in
    training, and the feature projection is not asked to tell them apart).
    """
    filled = [a for a in seen if a not in features.index] if fill_missing else []
    if filled:
        fill = pd.DataFrame(np.zeros((len(filled), features.shape[1])), index=filled,
                            columns=features.columns)
        features = pd.concat([features, fill])
    check_rows(features, seen, source)
    seen_set = set(seen)
    featured = [i for i in features.index if i not in seen_set]
    values = features.loc[list(seen) + featured].to_numpy(np.float64)
    is_filled = np.isin(np.asarray(list(seen) + featured, dtype=object), filled)
    real_seen = np.flatnonzero(~is_filled[: len(seen)])
    ref = values[real_seen] if len(real_seen) >= 2 else values[~is_filled]
    mean, sd = ref.mean(0), ref.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    table = np.clip((values - mean) / sd, -10.0, 10.0).astype(np.float32)
    table[is_filled] = 0.0
    return table, featured, {"source": source, "n_features": int(values.shape[1]),
                             "n_filled": len(filled)}


def target_prior(X_log, var_names: Sequence[str], labels: Sequence[str], control: str,
                 separator: str = "+") -> dict:
    """Typical on-target change of genetic perturbations of measured genes.

    For every single perturbation ``a`` seen in training that is a measured gene (with control
    expression > 0), the ratio of the target's mean normalised expression (``expm1`` of log1p)
    in cells of ``a`` to that in control cells. Returns ``{"log_ratio": median log ratio,
    "n": number of perturbations, "q25": ..., "q75": ...}`` (``n = 0`` when none qualify).
    """
    names = pd.Index([str(v) for v in var_names])
    labels = np.asarray(labels).astype(str)
    ctrl = labels == control
    if not ctrl.any():
        return {"log_ratio": 0.0, "n": 0}
    singles = [a for a in np.unique(labels)
               if split_label(a, control, separator) == (a,) and a in names]
    ratios = []
    for a in singles:
        j = int(names.get_loc(a))
        col = X_log[:, j]
        col = np.asarray(col.toarray() if sp.issparse(col) else col).ravel()
        c = np.expm1(col[ctrl]).mean()
        p = np.expm1(col[labels == a]).mean()
        if c > 0:
            ratios.append(np.log(max(p, 1e-3 * c) / c))
    if not ratios:
        return {"log_ratio": 0.0, "n": 0}
    r = np.asarray(ratios)
    return {"log_ratio": float(np.median(r)), "n": int(len(r)),
            "q25": float(np.quantile(r, 0.25)), "q75": float(np.quantile(r, 0.75))}


def stand_ins(labels: Sequence[str], unknown: Sequence[str], members, kind: str,
              var_names: Sequence[str], seen: Sequence[str], dose: bool = False) -> list[str]:
    """The labels a model predicts as a typical perturbation, with a warning; a clear
    ``KeyError`` for any other unknown perturbation.

    A model without perturbation features (``kind="none"``: none of the perturbations seen in
    training targets a measured gene, or ``perturbation_features=False``) cannot place a
    perturbation it never saw. Where that perturbation is a single measured gene, a user still
    expects a prediction, no worse than the mean baseline: it is predicted as a typical
    training perturbation (:func:`scdit.effects.typical`: the control cells of the context,
    not integrated, under the average training effect; the generator alone leaves them as
    they are). Other unknown perturbations (not measured genes, members of a combination,
    models with doses or with a feature table that lacks them) raise, saying why and how to
    predict them.

    Parameters
    ----------
    labels
        The requested labels.
    unknown
        Their members neither seen in training nor known through features.
    members
        ``label -> tuple of members``.
    kind
        The model's perturbation features: ``"data"``, ``"table"`` or ``"none"``.
    var_names
        The model's genes.
    seen
        The perturbations seen in training (for the error message).
    dose
        Whether the model was fitted with doses.

    Returns
    -------
    The labels to predict as a typical perturbation (empty where nothing is unknown).
    """
    if not unknown:
        return []
    genes, unknown = set(map(str, var_names)), set(unknown)
    out = [lab for lab in dict.fromkeys(labels) if set(members(lab)) & unknown]
    bad = [lab for lab in out if kind != "none" or dose or len(members(lab)) != 1
           or members(lab)[0] not in genes]
    if bad:
        atoms = sorted({m for lab in bad for m in members(lab) if m in unknown})
        note = (" (Alone, an unseen measured gene is predicted as a typical perturbation; not "
                "as a member of a combination, nor by a model with doses.)"
                if kind == "none" and genes & set(atoms) else "")
        raise KeyError(unknown_message(atoms, kind, var_names, seen) + note)
    warnings.warn(
        f"{out[:10]}{' ...' if len(out) > 10 else ''}: not seen in training, and the model has "
        "no perturbation features (none of the perturbations seen in training is a measured "
        "gene, or perturbation_features=False), so it cannot tell what they do. Each is "
        "predicted as a typical training perturbation: the context's control cells under the "
        "average training effect (the mean of scdit.evaluate's 'mean' baseline where the "
        "source cells are the training controls; with effects='none', the generator alone, "
        "as control cells). To predict them from what they target, refit with "
        "perturbation_features='data' (needs a training perturbation of a measured gene) or a "
        "table with a row per perturbation.",
        UserWarning, stacklevel=_caller_level())
    return out


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside scdit and torch (the user's call, also
    through ``torch.no_grad`` wrappers), for a warning issued by the function calling this."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
            "scdit", "torch"):
        frame, level = frame.f_back, level + 1
    return level


def unknown_message(missing: Sequence[str], kind: str, var_names: Sequence[str],
                    seen: Sequence[str]) -> str:
    """Why a model cannot place perturbations it neither saw nor has features for, and the fix.

    Parameters
    ----------
    missing
        The unknown perturbations (members of combinations separately).
    kind
        The model's perturbation features: ``"data"``, ``"table"`` or ``"none"``.
    var_names
        The model's genes (the rows of data-derived features).
    seen
        The perturbations seen in training (listed in the message).

    Returns
    -------
    A message starting ``Unknown perturbation(s) [...]``.
    """
    import difflib

    genes = [str(g) for g in var_names]
    they = "it is" if len(missing) == 1 else "they are"
    if kind == "data":
        upper = {g.upper(): g for g in genes}
        close = [upper.get(m.upper()) or next(iter(difflib.get_close_matches(m, genes, 1)), None)
                 for m in missing]
        close = [c for c in close if c is not None]
        why = (("it is not a measured gene" if len(missing) == 1 else "they are not measured "
                "genes") + " of the model: its perturbation features describe a "
               "perturbation by its target gene's expression, so every one of its "
               f"{len(genes)} genes can be predicted, but only those")
        how = (f"Check the spelling{f' (did you mean {close[:5]}?)' if close else ''}; to "
               "predict other perturbations, refit with a perturbation feature table "
               "(perturbation_features=<table with a row per perturbation, those seen in "
               "training included>)")
    elif kind == "table":
        why = f"{they} not in the model's perturbation feature table either"
        how = "Refit with a perturbation_features table that has rows for them"
    else:
        measured = [m for m in missing if m in set(genes)]
        why = ("the model has no perturbation features (it was fitted with "
               "perturbation_features=False, or none of the perturbations seen in training is "
               "a measured gene), so it cannot place a perturbation it never saw"
               + (f", even a measured gene such as {measured[0]!r}" if measured else ""))
        how = ("Refit with perturbation_features='data' (each measured target gene described by "
               "its expression; needs at least one measured-gene perturbation in training) or "
               "with a table that has a row per perturbation" if measured else
               "Refit with fit(..., perturbation_features=<table with a row per perturbation>)")
    return (f"Unknown perturbation(s) {list(missing)}: not seen in training, and {why}. {how}. "
            f"Seen perturbations: {list(seen)[:20]}{' ...' if len(seen) > 20 else ''}.")
