"""What ``scdit.fit`` checks and derives from its inputs before building the model: the
validation split, the perturbation features to use, source and tokenizer requirements."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .conditions import check_rows, read_features
from .data import ConditionVocab, detect_representation


def val_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified random validation rows (at most ``fraction`` of each condition, ≥ 1 kept)."""
    if fraction <= 0 or len(labels) < 200:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = []
    _, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes.ravel(), kind="stable")  # rows of each label, ascending
    for idx in np.split(order, np.flatnonzero(np.diff(codes.ravel()[order])) + 1):
        k = int(np.floor(len(idx) * fraction))
        if k and len(idx) - k >= 1:
            rows.extend(rng.choice(idx, k, replace=False))
    return np.sort(np.asarray(rows, dtype=np.int64))


def resolve_features(features, vocab: ConditionVocab, var_names) -> tuple[pd.DataFrame | None, str]:
    """(user table or None, kind) from the ``perturbation_features`` argument.

    The default (``None``) is ``"data"`` as soon as one perturbation seen in training is a
    measured gene, whatever their share: the data-derived table has a row for every measured
    gene, so any measured gene can then be predicted (gene panels of real screens are often
    filtered, so a minority of targets may be measured; the others keep their learned
    embedding). With none measured (e.g. a drug screen) there is nothing for the feature
    projection to learn from, and the default is no features.
    """
    measured = set(map(str, var_names))
    if features is None:
        return None, ("data" if any(a in measured for a in vocab.atoms) else "none")
    if features is False or (isinstance(features, str) and features == "none"):
        return None, "none"
    if isinstance(features, str) and features in ("data", "auto"):
        missing = [a for a in vocab.atoms if a not in measured]
        if len(missing) == len(vocab.atoms):
            raise ValueError(
                f"perturbation_features='data' describes a perturbation by its target gene's "
                f"expression, but none of the {len(missing)} perturbation(s) is a measured gene "
                f"(e.g. {missing[:5]}). Pass a feature table instead, or "
                "perturbation_features=False.")
        if missing:
            warnings.warn(
                f"perturbation_features='data': {len(missing)} seen perturbation(s) are not "
                f"measured genes ({missing[:10]}{' ...' if len(missing) > 10 else ''}); they keep "
                "only their learned embedding.", UserWarning, stacklevel=3)
        return None, "data"
    if features is True:
        raise TypeError("perturbation_features=True is ambiguous; pass 'data', a table or False.")
    df = read_features(features)
    check_rows(df, vocab.atoms)  # before any (tokenizer) training
    return df, "table"


def check_control_contexts(obs: pd.DataFrame, labels: np.ndarray, control: str,
                            context: np.ndarray, keys: Sequence[str]) -> None:
    """With a control source, every context with perturbed cells needs control cells."""
    has_ctrl = set(context[labels == control].tolist())
    bad = sorted(set(context[labels != control].tolist()) - has_ctrl)
    if bad:
        rows = [int(np.flatnonzero(context == b)[0]) for b in bad]
        ctx = obs.iloc[rows][list(keys)].astype(str).to_dict("records") if keys else []
        raise ValueError(
            f"source='control' needs control cells ({control!r}) in every covariate context "
            f"with perturbed cells; none in {ctx[:10]}. Add control cells for them, drop those "
            "cells, or use source='noise'.")


def check_tokenizer_input(adata: AnnData, tok, representation: str, layer: str | None,
                           covariate_keys: Sequence[str], *, on_disk: bool = False) -> None:
    """Clear errors, before any training, for data a tokenizer cannot use."""
    kind = tok.kind
    if on_disk and tok.requires_counts:
        raise ValueError(
            f"tokenizer={kind!r} cannot train from on-disk data yet (its input is computed from "
            "each cell's counts and annotations as the cells are read). Use tokenizer='genes' "
            "or 'pca' with on-disk data, or load the cells in memory (a subset if needed: "
            "anndata.read_h5ad(path, backed='r')[rows].to_memory()).")
    if tok.requires_counts and representation != "counts":
        where = f"layer {layer!r}" if layer else "adata.X"
        layers = [k for k in adata.layers if detect_representation(adata.layers[k]) == "counts"]
        hint = (f" Layers holding counts: {layers}; pass layer={layers[0]!r}." if layers else
                " Pass the layer with raw counts (layer='counts'), or use tokenizer='genes' or "
                "'pca', which work on log-normalised data.")
        raise ValueError(f"tokenizer={kind!r} needs raw counts, but {where} holds log-normalised "
                         f"(non-integer) values.{hint}")
    batch_key = tok.batch_key
    if batch_key is not None:
        if batch_key not in adata.obs:
            raise KeyError(f"batch_key {batch_key!r} is not a column of adata.obs; available: "
                           f"{list(adata.obs.columns)[:20]}.")
        if batch_key not in covariate_keys:
            raise ValueError(f"The scVI batch_key {batch_key!r} must also be a covariate key, so "
                             f"that generated cells have a batch to decode in: pass "
                             f"covariate_keys={[*covariate_keys, batch_key]!r}.")
