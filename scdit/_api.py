"""``scdit.fit`` and ``scdit.load``: the two entry points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData

from ._config import (
    DIT_PRESETS,
    DataConfig,
    DiTConfig,
    FlowConfig,
    ScDiTConfig,
    TokenizerConfig,
    TrainConfig,
)
from ._model import ScDiT, build_field, make_reference
from .data._dataset import CellDataset
from .data._representation import to_log1p
from .data._setup import condition_labels, get_matrix, validate
from .data._vocab import ConditionVocab, CovariateVocab
from .tokenizers import build_tokenizer
from .train import train_field


def _val_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified random validation rows (at most ``fraction`` of each condition, ≥ 1 kept)."""
    if fraction <= 0 or len(labels) < 200:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        k = int(np.floor(len(idx) * fraction))
        if k and len(idx) - k >= 1:
            rows.extend(rng.choice(idx, k, replace=False))
    return np.sort(np.asarray(rows, dtype=np.int64))


def fit(
    adata: AnnData,
    condition_key: str,
    *,
    control: str | None = None,
    covariate_keys: Sequence[str] = (),
    layer: str | None = None,
    representation: str | None = None,
    separator: str = "+",
    tokenizer: str = "genes",
    n_top_genes: int = 2000,
    max_tokens: int | None = None,
    preset: str = "small",
    max_steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    max_minutes: float | None = 14.0,
    accelerator: str = "auto",
    precision: str = "auto",
    checkpoint_dir: str | Path | None = None,
    dit: DiTConfig | None = None,
    flow: FlowConfig | None = None,
    train: TrainConfig | None = None,
    min_cells: int = 10,
    verbose: bool = True,
) -> ScDiT:
    """Fit a perturbation-conditioned DiT with rectified flow to an AnnData.

    Parameters
    ----------
    adata
        Cells × genes, raw counts or log1p-normalised (detected, or set ``representation``).
        It is never modified.
    condition_key
        ``obs`` column with each cell's perturbation; combinations written ``"A+B"``.
    control
        Label of control cells; auto-detected among common labels (``control``, ``ctrl``,
        ``non-targeting``, ...) when ``None``.
    covariate_keys
        ``obs`` columns to condition on (cell type, cell line, batch, ...).
    layer
        Layer with the expression (default ``.X``).
    representation
        ``"counts"`` or ``"log1p"``; ``None`` detects it. Predictions come back in it.
    separator
        Separator of combination members.
    tokenizer, n_top_genes, max_tokens
        Gene-token tokenizer: how many highly variable genes to model (perturbation targets
        that are measured genes are always kept) and the maximum number of tokens per cell
        (default: the preset's ``max_tokens``; at most ~128).
    preset
        DiT size: ``"tiny"``, ``"small"`` (CPU default), ``"base"``, ``"large"``.
    max_steps
        Optimisation steps; ``None`` picks a length from the number of cells.
    max_minutes
        Wall-time budget of training (default 14 min, so that a default fit ends within 15
        minutes on a small CPU); when spent, training stops and the best EMA weights so far are
        kept. ``None`` disables it.
    batch_size, lr, seed, accelerator, precision
        Training settings (``precision="auto"``: bf16 mixed on GPUs that support it, else fp32).
    checkpoint_dir
        Where Lightning writes checkpoints (best and last); none are written when ``None``.
    dit, flow, train
        Full configuration objects overriding the preset and the arguments above.
    min_cells
        Conditions with fewer cells trigger a warning.
    verbose
        Show the progress bar and a summary.

    Returns
    -------
    A fitted :class:`~scdit.ScDiT`.
    """
    info = validate(adata, condition_key, control=control, covariate_keys=covariate_keys,
                    layer=layer, representation=representation, min_cells=min_cells)
    if preset not in DIT_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(DIT_PRESETS)}.")
    if tokenizer != "genes":
        raise ValueError(f"Unknown tokenizer {tokenizer!r}; available: ['genes'].")
    dit = dit or DIT_PRESETS[preset]
    max_tokens = int(max_tokens or dit.max_tokens)
    labels = condition_labels(adata, condition_key).to_numpy()
    if (labels != info.control).sum() == 0:
        raise ValueError("Only control cells were found; add perturbed cells to train on.")
    train = train or TrainConfig(batch_size=batch_size, lr=lr, max_steps=max_steps, seed=seed,
                                 accelerator=accelerator, precision=precision,
                                 max_minutes=max_minutes)
    cfg = ScDiTConfig(
        data=DataConfig(condition_key=condition_key, control=info.control,
                        covariate_keys=tuple(covariate_keys), separator=separator, layer=layer,
                        representation=info.representation),
        tokenizer=TokenizerConfig(kind=tokenizer, n_top_genes=n_top_genes, max_tokens=max_tokens),
        dit=dit, flow=flow or FlowConfig(), train=train,
    )
    X = get_matrix(adata, layer)
    X_log = to_log1p(X, info.representation)
    vocab = ConditionVocab.build(labels, info.control, separator)
    covs = CovariateVocab.build(adata.obs, covariate_keys)
    tok = build_tokenizer(tokenizer, n_top_genes=n_top_genes, max_tokens=max_tokens,
                          gene_order=cfg.tokenizer.gene_order)
    tok.fit(X_log, adata.var_names, required_genes=vocab.atoms, seed=seed)
    gene_idx = adata.var_names.get_indexer(list(tok.genes))
    X_model = X_log[:, gene_idx]
    atoms = vocab.encode(list(labels))
    cov_codes = covs.encode(adata.obs) if covariate_keys else np.zeros((adata.n_obs, 0), np.int64)
    val = _val_rows(labels, cfg.train.val_fraction, seed)
    tr = np.setdiff1d(np.arange(adata.n_obs), val)
    train_ds = CellDataset(X_model[tr], atoms[tr], cov_codes[tr])
    val_ds = CellDataset(X_model[val], atoms[val], cov_codes[val]) if len(val) else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field = build_field(cfg, tok, vocab, covs)
    n_params = sum(p.numel() for p in field.parameters())
    if verbose:
        print(f"scdit: {adata.n_obs} cells ({len(tr)} train / {len(val)} validation), "
              f"{len(vocab.atoms)} perturbations, {len(vocab.conditions)} conditions, "
              f"{info.representation} input; modelling {tok.n_genes}/{adata.n_vars} genes in "
              f"{tok.n_tokens} tokens of {tok.patch_size}; DiT {preset} ({n_params / 1e6:.2f} M params)")
    result = train_field(field, tok, train_ds, val_ds, dit=cfg.dit, flow=cfg.flow, train=cfg.train,
                         verbose=verbose, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
    summary = {"n_cells": int(adata.n_obs), "n_train": int(len(tr)), "n_val": int(len(val)),
               "n_params": int(n_params), "steps": result.steps, "max_steps": result.max_steps, "seconds": round(result.seconds, 1),
               "best_val_loss": result.best_val_loss, "history": result.history,
               "precision": result.precision, "accelerator": result.accelerator,
               "n_modelled_genes": tok.n_genes}
    if verbose:
        early = "" if result.steps >= result.max_steps else \
            f" (stopped before {result.max_steps}: early stopping or the time budget)"
        print(f"scdit: trained {result.steps} steps{early} in {result.seconds:.0f} s "
              f"({result.precision}); best validation loss {result.best_val_loss:.4f}")
    reference = make_reference(adata, X, cfg, seed=seed)
    return ScDiT(cfg, vocab, covs, tok, result.field, adata.var_names, reference, summary)


def load(path: str | Path) -> ScDiT:
    """Load a model saved with :meth:`ScDiT.save`."""
    return ScDiT.load(path)
