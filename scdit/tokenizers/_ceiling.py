"""Reconstruction ceiling: how much of real cells a tokenizer's representation keeps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def per_gene_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b`` (NaN if constant)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


@torch.no_grad()
def reconstruct(tokenizer, X_log, counts=None, obs: pd.DataFrame | None = None,
                batch_size: int = 2048) -> np.ndarray:
    """``decode(encode(prepare(cells)))``: log1p of :attr:`tokenizer.genes`, ``(n_cells, G)``."""
    Z = tokenizer.prepare(X_log, counts=counts, obs=obs)
    out = []
    for start in range(0, Z.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        x = torch.as_tensor(_dense(Z[sl]), dtype=torch.float32)
        sub_obs = None if obs is None else obs.iloc[sl]
        out.append(tokenizer.decode(tokenizer.encode(x), obs=sub_obs).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(tokenizer.genes)))


def reconstruction_ceiling(tokenizer, X_log, var_names, *, labels=None, control: str | None = None,
                           counts=None, obs: pd.DataFrame | None = None,
                           max_cells: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How well encode → decode reproduces real cells (ideally cells the tokenizer was not fit on).

    Each cell goes through ``prepare → encode → decode`` and is compared with its real log1p
    expression of the tokenizer's genes. Predictions of a model trained in this representation
    cannot, on average, be closer to real cells than this.

    Parameters
    ----------
    tokenizer
        A fitted tokenizer.
    X_log
        Real log1p expression, cells × ``var_names`` (dense or sparse).
    var_names
        Gene names of the columns of ``X_log``.
    labels, control
        Perturbation label of each cell and the control label, for the Pearson Δ metric.
    counts, obs
        Raw counts and ``obs`` of the same cells, for tokenizers that need them (scVI).
    max_cells
        At most this many cells are used (a seeded random subset).

    Returns
    -------
    dict with

    - ``per_gene_pearson``: median over genes of the correlation across cells between real and
      reconstructed expression (genes constant in either are skipped);
    - ``mse``: mean squared error per gene and cell (log1p units);
    - ``pearson_delta``: mean over perturbations of the correlation between the reconstructed and
      the real change of the perturbation's mean from the control mean (each in its own space);
      ``NaN`` without labels or control cells;
    - ``n_cells``, ``n_genes``, ``n_perturbations``.
    """
    n = X_log.shape[0]
    rows = np.arange(n)
    if n > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))
    X_log = X_log[rows]
    counts = None if counts is None else counts[rows]
    obs = None if obs is None else obs.iloc[rows]
    rec = reconstruct(tokenizer, X_log, counts=counts, obs=obs)  # (n, G)
    idx = pd.Index([str(v) for v in var_names]).get_indexer(list(tokenizer.genes))
    real = _dense(X_log[:, idx])  # (n, G)
    r = per_gene_pearson(real, rec)
    out = {"per_gene_pearson": float(np.nanmedian(r)) if np.isfinite(r).any() else float("nan"),
           "mse": float(np.mean((real - rec) ** 2)) if real.size else float("nan"),
           "pearson_delta": float("nan"), "n_cells": int(len(rows)), "n_genes": int(len(idx)),
           "n_perturbations": 0}
    if labels is not None and control is not None:
        lab = np.asarray(labels)[rows].astype(str)
        ctrl = lab == str(control)
        perts = [p for p in np.unique(lab) if p != str(control)]
        if ctrl.any() and perts:
            real_c, rec_c = real[ctrl].mean(0), rec[ctrl].mean(0)
            deltas = [_pearson(rec[lab == p].mean(0) - rec_c, real[lab == p].mean(0) - real_c)
                      for p in perts]
            finite = [d for d in deltas if np.isfinite(d)]
            out["pearson_delta"] = float(np.mean(finite)) if finite else float("nan")
            out["n_perturbations"] = len(perts)
    return out


def format_ceiling(c: dict[str, Any]) -> str:
    """One-line summary of :func:`reconstruction_ceiling` output."""
    return (f"per-gene Pearson {c['per_gene_pearson']:.3f}, MSE {c['mse']:.4f}, "
            f"Pearson Δ {c['pearson_delta']:.3f} ({c['n_cells']} cells, "
            f"{c['n_perturbations']} perturbations)")
