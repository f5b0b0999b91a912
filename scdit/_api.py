"""``scdit.fit`` and ``scdit.load``: the two entry points."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData

from ._config import (
    DIT_PRESETS,
    ConditionConfig,
    DataConfig,
    DiTConfig,
    FlowConfig,
    ScDiTConfig,
    TokenizerConfig,
    TrainConfig,
    as_config,
    merge_keyword,
)
from ._fit_inputs import check_control_contexts, check_tokenizer_input, resolve_features, val_rows
from ._fit_ondisk import DiskCells, is_on_disk, sample_positions
from ._resume import open_run, snapshot_writer
from .conditions import data_features, feature_reliability, feature_table, target_prior
from .data import (
    CellDataset,
    ConditionVocab,
    CovariateVocab,
    StreamedTrainingSet,
    condition_labels,
    covariate_keys_arg,
    get_matrix,
    parse_doses,
    to_log1p,
    validate,
)
from .model import ScDiT, build_field, calibrate_seen_guidance, make_reference
from .tokenizers import format_ceiling, reconstruction_ceiling, resolve_tokenizer
from .train import (
    contexts_lacking_perturbations,
    default_source_noise,
    default_time_sampling,
    is_global_zero,
    train_field,
)


class _Unset:
    """Mixin of a keyword's default value, so that ``fit`` tells it from a value given explicitly
    (the default object itself, not an equal value): configs then decide, see ``merge_keyword``."""


class _DefaultInt(_Unset, int):
    pass


class _DefaultStr(_Unset, str):
    pass


_SOURCE = _DefaultStr(FlowConfig.source)
_PRESET = _DefaultStr("small")
_SEED = _DefaultInt(TrainConfig.seed)
class _DefaultNone(_Unset):
    """``None`` as a keyword's default (not given); a given ``None`` is a choice."""

    def __repr__(self) -> str:
        return "None"


_MAX_MINUTES = _DefaultNone()  # TrainConfig.max_minutes: None, no wall-time budget
_SOURCES = ("noise", "control", "auto")


def _given(value) -> bool:
    return not isinstance(value, _Unset)


def _resolve_configs(preset: str, dit, conditions, flow, train, *, source: str,
                     max_steps: int | None, max_minutes: float | None, seed: int,
                     covariate_keys: Sequence[str]):
    """(preset name, DiT, condition, flow and train configs) from fit's arguments, with each
    setting from one place: a keyword given explicitly fills a config field left at its default,
    and disagrees with a field set otherwise (ValueError)."""
    if preset not in DIT_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(DIT_PRESETS)}.")
    dit = as_config(dit, DiTConfig, "dit")
    if dit is None:
        dit = DIT_PRESETS[preset]
    elif _given(preset) and dit != DIT_PRESETS[preset]:
        raise ValueError(
            f"preset={preset!r} and dit= disagree; give the architecture in one place: a preset "
            "name, or a DiTConfig as dit= (without preset=). A preset with another backbone: "
            f"dit=dataclasses.replace(scdit.config.DIT_PRESETS[{preset!r}], backbone='mlp').")
    as_dit = dataclasses.replace(dit, backbone="dit")
    name = next((k for k, v in DIT_PRESETS.items() if v == as_dit), "custom")
    if dit.backbone != "dit":
        name = f"{name}, {dit.backbone} backbone"
    conditions = as_config(conditions, ConditionConfig, "conditions") or ConditionConfig()
    if (conditions.features, conditions.n_features) != ("none", 0):
        raise ValueError("ConditionConfig.features and n_features are set by fit from "
                         "perturbation_features=; leave them at their defaults.")
    flow = as_config(flow, FlowConfig, "flow") or FlowConfig()
    if _given(source):
        flow = merge_keyword(flow, "source", source, keyword="source", section="flow")
    if flow.source not in _SOURCES:
        raise ValueError(f"source must be one of {list(_SOURCES)}, got {flow.source!r}.")
    if flow.source == "auto":
        flow = dataclasses.replace(flow, source="control" if covariate_keys else "noise")
    train = as_config(train, TrainConfig, "train") or TrainConfig()
    for key, value, given in (("max_steps", max_steps, max_steps is not None),
                              ("max_minutes", max_minutes, _given(max_minutes)),
                              ("seed", seed, _given(seed))):
        if given:
            train = merge_keyword(train, key, value, keyword=key, section="train")
    if train.checkpoint_dir is not None:
        train = dataclasses.replace(train, checkpoint_dir=str(train.checkpoint_dir))
    return name, dit, conditions, flow, train


def fit(
    adata: AnnData | str | os.PathLike | Sequence[str | os.PathLike | AnnData],
    condition_key: str,
    *,
    control: str | None = None,
    covariate_keys: Sequence[str] = (),
    layer: str | None = None,
    representation: str | None = None,
    separator: str = "+",
    perturbation_features=None,
    dose_key: str | None = None,
    source: str = _SOURCE,
    tokenizer="genes",
    preset: str = _PRESET,
    max_steps: int | None = None,
    max_minutes: float | None = _MAX_MINUTES,
    seed: int = _SEED,
    dit: DiTConfig | None = None,
    conditions: ConditionConfig | None = None,
    flow: FlowConfig | None = None,
    train: TrainConfig | None = None,
    verbose: bool = True,
) -> ScDiT:
    """Fit a perturbation-conditioned DiT with rectified flow to an AnnData.

    Every setting lives in one place. The keywords below cover the common ones; the rest are
    fields of the config objects (``train=scdit.TrainConfig(batch_size=64, lr=3e-4)``, a dict
    of fields works too). A keyword that is also a config field (``source`` ↔ ``flow.source``;
    ``max_steps``, ``max_minutes``, ``seed`` ↔ ``train``; ``preset`` ↔ ``dit``) fills that field
    when the config leaves it at its default; if the config sets it to another value, ``fit``
    raises a ``ValueError`` naming both instead of silently picking one.

    Parameters
    ----------
    adata
        Cells × genes, raw counts or log1p-normalised (detected, or set ``representation``).
        It is never modified. An AnnData in memory, or cells on disk, which are streamed
        during training instead of loaded: an ``.h5ad`` or ``.zarr`` path, a list of them
        (concatenated; same genes in the same order) or an AnnData opened with
        ``backed="r"``; ``obs`` and a bounded working sample of cells are held in memory (see
        the "Large data" guide).
    condition_key
        ``obs`` column with each cell's perturbation; combinations written ``"A+B"``.
    control
        Label of control cells; auto-detected among common labels (``control``, ``ctrl``,
        ``non-targeting``, ...) when ``None``.
    covariate_keys
        ``obs`` columns to condition on (cell type, cell line, batch, ...); a single string is
        one column.
    layer
        Layer with the expression (default ``.X``).
    representation
        ``"counts"`` or ``"log1p"``; ``None`` detects it. Predictions come back in it.
    separator
        Separator of combination members.
    perturbation_features
        How perturbations are described, which is what lets the model predict perturbations it
        never saw. A DataFrame / dict / file path (.csv, .tsv, .parquet, .h5ad) with one row of
        numbers per perturbation name (any width; every perturbation in training needs a row;
        other rows become predictable unseen perturbations); ``"data"`` for features derived
        from the data (for genetic perturbations of measured genes: each target gene's
        correlation with the top principal components of the training cells, plus its mean and
        SD; every measured gene becomes predictable); ``False`` for none (a learned embedding
        per perturbation only). Default (``None``): ``"data"`` when at least one perturbation
        seen in training is a measured gene, whatever their share (the others keep only their
        learned embedding), so that every measured gene can be predicted; else none. Seen
        perturbations also keep a learned residual embedding.
    dose_key
        Numeric ``obs`` column with the dose of each perturbation (``"a+b"`` strings for one dose
        per member of a combination); used as a continuous input.
    source
        Source of the flow: ``"noise"`` (Gaussian; generate cells) or ``"control"`` (transport
        control cells of the same covariate context, paired by minibatch optimal transport;
        ``predict(source=control_cells)`` then maps those very cells to their perturbed state).
        ``"auto"`` (default): ``"control"`` when ``covariate_keys`` are given (predicting a
        context from its own control cells), else ``"noise"``; see docs/results.md
        (glioblastoma patients, Norman doubles) for how the two compare.
    tokenizer
        The space the DiT works in (see the user guide, "Choosing a tokenizer"): a name,
        ``"genes"`` (log1p of selected genes, patches of genes per token), ``"pca"`` (principal
        components of log1p data) or ``"scvi"`` (an scVI latent space; needs raw counts, trains
        an ``scvi.model.SCVI``), with default options; a :class:`~scdit.TokenizerConfig` (kind
        and options: ``n_top_genes`` (2,000 highly variable genes; measured perturbation targets
        are always kept), ``max_tokens`` (``None``: the preset's token budget), ``patch_size``,
        ``gene_order``, ``encoding``, ``n_components``, ``n_latent``, ``batch_key``,
        ``max_epochs``, ``gene_likelihood``, ``library``) or a dict of its fields; an already
        trained ``scvi.model.SCVI`` (used as is); or a tokenizer object of a class registered
        with :func:`scdit.tokenizers.register`, for options that are not plain values (e.g.
        ``GeneTokenizer(gene_features=table)``, gene features initialising the gene
        embeddings; the object keeps its own settings). The reconstruction ceiling of the
        choice is measured on the validation cells and stored in ``model.summary["ceiling"]``.
    preset
        DiT size: ``"tiny"``, ``"small"`` (CPU default), ``"base"``, ``"large"``; it also sets
        the default token budget. Give either a preset or ``dit=``.
    max_steps
        Optimisation steps (``train.max_steps``); ``None`` picks a length from the number of
        cells, the source and the design (:func:`scdit.train.auto_max_steps`: noise ≥ 4,000
        steps; control ≥ 300 when a context lacks perturbations the others have, else
        ≥ 1,200).
    max_minutes
        Opt-in wall-time budget of training in minutes (``train.max_minutes``; default
        ``None``: none, so that a fit depends only on its data, settings and seed, not on the
        machine's load). A run that would overrun a budget is shortened early on, its
        learning-rate schedule included (``summary["budget_steps"]``); a hard stop at the budget
        remains as a backstop (``summary["stopped_by_time"]``, with a warning, when it ends a
        run before its schedule). A shortened run depends on the machine's speed and load.
    seed
        Seed of everything random in the fit (``train.seed``): validation split, tokenizer,
        initial weights, batches.
    dit
        Architecture (:class:`~scdit.DiTConfig`) instead of a preset; its ``backbone``
        (``"dit"`` or the attention-free ``"mlp"``) picks the velocity network. A preset's
        sizes with the MLP: ``dataclasses.replace(scdit.config.DIT_PRESETS["tiny"],
        backbone="mlp")``.
    conditions
        :class:`~scdit.ConditionConfig`: feature PCs, residual and covariate dropout.
    flow
        :class:`~scdit.FlowConfig`: source, source noise, time sampling, default sampler.
    train
        :class:`~scdit.TrainConfig`: batch size, learning rate, schedule, precision,
        accelerator, the minimum cells per condition before a warning, checkpoints
        (``checkpoint_dir``, ``checkpoint_every``) and resuming an interrupted fit
        (``TrainConfig(checkpoint_dir=..., resume=True)`` with the same data and settings
        continues from the last complete checkpoint and ends with the model the uninterrupted
        fit would have given), ...
    verbose
        Show the progress bar and a summary.

    Returns
    -------
    ScDiT
        The fitted model.
    """
    covariate_keys = covariate_keys_arg(covariate_keys, condition_key)
    preset_name, dit, conditions, flow, train = _resolve_configs(
        preset, dit, conditions, flow, train, source=source, max_steps=max_steps,
        max_minutes=max_minutes, seed=seed, covariate_keys=covariate_keys)
    seed = train.seed
    talk = verbose and is_global_zero()  # several processes: one prints
    disk = None  # on-disk cells: obs in memory, a working sample of cells, training streamed
    if isinstance(adata, (list, tuple)) and not is_on_disk(adata):
        raise TypeError(
            "fit takes one AnnData, or on-disk cells (.h5ad / .zarr paths, or AnnData opened "
            "with backed='r'), not a list of in-memory AnnData: concatenate them "
            "(anndata.concat) or write them to .h5ad files and pass the paths.")
    if is_on_disk(adata):
        disk = DiskCells.open(adata, layer=layer, seed=seed, obs_columns=[
            condition_key, *covariate_keys, *([dose_key] if dose_key else [])])
        adata = disk.meta
    info = validate(adata, condition_key, control=control, covariate_keys=covariate_keys,
                    layer=layer, representation=representation, min_cells=train.min_cells,
                    separator=separator, X=None if disk is None else disk.probe)
    if dose_key is not None and dose_key not in adata.obs:
        raise KeyError(f"dose_key {dose_key!r} is not a column of adata.obs; available: "
                       f"{list(adata.obs.columns)[:20]}.")
    if isinstance(tokenizer, Mapping):
        tokenizer = as_config(tokenizer, TokenizerConfig, "tokenizer")
    tok, tok_cfg = resolve_tokenizer(tokenizer, max_tokens=dit.max_tokens,
                                     accelerator=train.accelerator, verbose=verbose)
    check_tokenizer_input(adata, tok, info.representation, layer, covariate_keys,
                          on_disk=disk is not None)
    if conditions.target_marks and tok_cfg.kind != "genes":
        raise ValueError(f"ConditionConfig.target_marks=True needs the 'genes' tokenizer (marks "
                         f"flag gene slots); the tokenizer is {tok_cfg.kind!r}. Leave "
                         "target_marks=None (on where it applies) or use tokenizer='genes'.")
    labels = condition_labels(adata, condition_key).to_numpy()
    if (labels != info.control).sum() == 0:
        raise ValueError("Only control cells were found; add perturbed cells to train on.")
    vocab = ConditionVocab.build(labels, info.control, separator)
    feats, feat_kind = resolve_features(perturbation_features, vocab, adata.var_names)
    covs = CovariateVocab.build(adata.obs, covariate_keys)
    cov_codes = covs.encode(adata.obs) if covariate_keys else np.zeros((adata.n_obs, 0), np.int64)
    context = np.unique(cov_codes, axis=0, return_inverse=True)[1].ravel() if covariate_keys \
        else np.zeros(adata.n_obs, np.int64)
    if flow.source == "control":
        check_control_contexts(adata.obs, labels, info.control, context, covariate_keys)
    lacking = contexts_lacking_perturbations(labels, context, info.control, separator)
    if flow.source_noise is None:
        flow = dataclasses.replace(flow, source_noise=default_source_noise(flow.source,
                                                                           lacking > 0))
    if flow.time_sampling is None:
        flow = dataclasses.replace(flow, time_sampling=default_time_sampling(flow.source,
                                                                             lacking > 0))
    cfg = ScDiTConfig(
        data=DataConfig(condition_key=condition_key, control=info.control,
                        covariate_keys=tuple(covariate_keys), separator=separator, layer=layer,
                        representation=info.representation, dose_key=dose_key),
        conditions=conditions, tokenizer=tok_cfg, dit=dit, flow=flow, train=train,
    )
    if disk is None:
        X, sample = get_matrix(adata, layer), None
        run = open_run(cfg, adata, X, labels, verbose=talk)  # checkpoints; resume: same run?
    else:
        run = open_run(cfg, adata, disk.store, labels, verbose=talk)
        disk.check_and_count(info.representation, talk, train)  # every value, first
        sample = disk.draw_sample(labels, context, info.control, seed)
        X = disk.X
    X_log = to_log1p(X, info.representation)  # (in-memory cells or the working sample)
    val = val_rows(labels, cfg.train.val_fraction, seed)
    if sample is not None:  # validation cells come from the sample; the rest all train
        val = np.intersect1d(val, sample)
    tr = np.setdiff1d(np.arange(adata.n_obs), val)
    tr_mem = tr if sample is None else np.intersect1d(tr, sample)  # training cells in memory
    counts = X if info.representation == "counts" else None
    cols = None if disk is None else disk.columns(tok, vocab.atoms)
    names = adata.var_names if cols is None else adata.var_names[cols]
    X_in = X_log if cols is None else X_log[:, cols]  # the tokenizer's input columns
    counts_in = None if counts is None else (counts if cols is None else counts[:, cols])
    pos = partial(sample_positions, sample)
    obs_mem = adata.obs if sample is None else adata.obs.iloc[sample]
    tok.fit(X_in[pos(tr_mem)], names, counts=None if counts is None else counts_in[pos(tr_mem)],
            obs=adata.obs.iloc[tr_mem], required_genes=vocab.atoms, seed=seed)
    gene_idx = adata.var_names.get_indexer(list(tok.genes))
    X_model = tok.prepare(X_in, counts=counts_in, obs=obs_mem)
    ceil_rows = val if len(val) else tr_mem
    ceiling = reconstruction_ceiling(tok, X_in[pos(ceil_rows)], names,
                                     labels=labels[ceil_rows], control=info.control,
                                     counts=None if counts is None else counts_in[pos(ceil_rows)],
                                     obs=adata.obs.iloc[ceil_rows], seed=seed)
    ceiling["held_out"] = bool(len(val))
    table = None
    if feat_kind != "none":
        if feat_kind == "data":
            feats = data_features(X_log, adata.var_names, gene_idx,
                                  n_components=cfg.conditions.n_components, seed=seed)
        table, featured, _ = feature_table(feats, vocab.atoms, source=feat_kind,
                                           fill_missing=feat_kind == "data")
        vocab = vocab.with_featured(featured)
        cfg = dataclasses.replace(cfg, conditions=dataclasses.replace(
            cfg.conditions, features=feat_kind, n_features=int(table.shape[1])))
    n_marked = len(set(vocab.atoms) & set(tok.genes)) if tok_cfg.kind == "genes" else 0
    if cfg.conditions.target_marks and not n_marked:
        warnings.warn("ConditionConfig.target_marks=True, but no perturbation seen in training "
                      "is a modelled gene, so there is nothing to mark; fitting without marks.",
                      UserWarning, stacklevel=2)
    cfg = dataclasses.replace(cfg, conditions=dataclasses.replace(
        cfg.conditions, target_marks=cfg.conditions.target_marks is not False and n_marked > 0))
    atoms = vocab.encode(list(labels))
    dose = parse_doses(list(labels), adata.obs[dose_key].tolist(), vocab, atoms.shape[1],
                       dose_key) if dose_key else None
    src_kw: dict = {}
    if cfg.flow.source == "control":
        ctrl_rows = tr_mem[labels[tr_mem] == info.control]
        src_kw = {"source_X": X_model[pos(ctrl_rows)], "source_context": context[ctrl_rows]}

    def subset(rows, **kw):  # rows of X_model, not a copy of them
        return CellDataset(X_model, atoms[rows], cov_codes[rows], rows=pos(rows),
                           dose=None if dose is None else dose[rows],
                           context=context[rows] if src_kw else None, seed=seed, **src_kw, **kw)

    if disk is None:
        train_ds = subset(tr)
    else:  # every training cell, streamed from disk through a copy of the fitted tokenizer
        train_ds = StreamedTrainingSet(
            disk.store, tr, columns=np.arange(adata.n_vars) if cols is None else cols,
            prepare=copy.deepcopy(tok).prepare, atoms=atoms, covariates=cov_codes, dose=dose,
            context=context, log1p=info.representation == "counts",
            batch_size=cfg.train.batch_size, seed=seed, **src_kw)
        if cols is not None:  # the model reads all genes: the tokenizer's columns among them
            tok.gene_idx = cols[np.asarray(tok.gene_idx)].astype(np.int64)
    val_ds = subset(val, fixed_source=True) if len(val) else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        field = build_field(cfg, tok, vocab, covs, features=table)
    n_params = sum(p.numel() for p in field.parameters())
    if talk:
        where = "" if disk is None else \
            f" on disk ({', '.join(map(str, disk.store.sources))}; {len(sample)} in memory)"
        print(f"scdit: {adata.n_obs} cells{where} ({len(tr)} train / {len(val)} validation), "
              f"{len(vocab.atoms)} perturbations, {len(vocab.conditions)} conditions, "
              f"perturbation features: {feat_kind}"
              f"{f' ({len(vocab.featured)} more predictable)' if vocab.featured else ''}, "
              f"source: {cfg.flow.source}, "
              f"{info.representation} input; modelling {tok.n_genes}/{adata.n_vars} genes in "
              f"{tok.n_tokens} tokens of {tok.patch_size}; DiT {preset_name} ({n_params / 1e6:.2f} M params)")
        where = "validation" if ceiling["held_out"] else "training (no validation split)"
        print(f"scdit: tokenizer {tok_cfg.kind!r} ({tok.n_features} values per cell); "
              f"reconstruction ceiling on {where} cells: {format_ceiling(ceiling)}")
    cov_drop = cfg.conditions.covariate_dropout
    if cov_drop is None:
        cov_drop = 0.5 if (cfg.flow.source == "control" and covariate_keys) else 0.0
        cfg = dataclasses.replace(cfg, conditions=dataclasses.replace(
            cfg.conditions, covariate_dropout=cov_drop))
    summary = {"n_cells": int(adata.n_obs), "n_train": int(len(tr)), "n_val": int(len(val)),
               "n_params": int(n_params), "n_modelled_genes": tok.n_genes,
               "tokenizer": tok_cfg.kind, "ceiling": ceiling,
               "contexts_lacking_perturbations": lacking,
               "target_marks": n_marked if cfg.conditions.target_marks else 0}
    if disk is not None:
        summary["on_disk"] = disk.summary()
    if feat_kind != "none":
        mem_labels = labels if sample is None else labels[sample]
        summary["target_prior"] = target_prior(X_log, adata.var_names, mem_labels, info.control,
                                               separator)
        summary["feature_reliability"] = feature_reliability(
            X_log, adata.var_names, mem_labels, info.control, table, vocab.atoms,
            separator=separator, genes=gene_idx)
    if disk is None:
        reference = make_reference(adata, X, cfg, seed=seed)
    else:
        n_groups = len(adata.obs.groupby([condition_key, *covariate_keys], observed=True))
        reference = make_reference(adata, disk.store, cfg, seed=seed,
                                   max_per_group=disk.reference_per_group(n_groups))
    del X_log, X_in, counts_in  # training needs only the model input: free the rest
    checkpoint = None
    if run is not None:  # complete checkpoints (+ a loadable model) every N steps
        run.check_inputs(tok, vocab, table, (tr, val, X_model, atoms, cov_codes, dose, context))
        checkpoint = run.callback(snapshot_writer(
            run.dirpath / "model", cfg, vocab, covs, tok, adata.var_names, reference, summary))
    result = train_field(field, tok, train_ds, val_ds, dit=cfg.dit, flow=cfg.flow, train=cfg.train,
                         covariate_dropout=cov_drop, held_out_contexts=lacking > 0,
                         verbose=verbose, checkpoint=checkpoint,
                         resume_from=None if run is None else run.resume_from)
    summary.update({"steps": result.steps, "max_steps": result.max_steps,
                    "budget_steps": result.budget_steps, "stopped_by_time": result.stopped_by_time,
                    "seconds": round(result.seconds, 1),
                    "best_val_loss": result.best_val_loss, "history": result.history,
                    "precision": result.precision, "accelerator": result.accelerator,
                    "compiled": result.compiled})
    if run is not None and run.step is not None:
        summary["resumed_from_step"] = run.step
    if talk:
        early = "" if result.steps >= result.max_steps else \
            f" (stopped before {result.max_steps}: early stopping or the time budget)"
        print(f"scdit: trained {result.steps} steps{early} in {result.seconds:.0f} s "
              f"({result.precision}{', compiled' if result.compiled else ''}); best validation loss {result.best_val_loss:.4f}")
    model = ScDiT(cfg, vocab, covs, tok, result.field, adata.var_names, reference, summary)
    if cfg.train.calibrate_guidance and cfg.dit.cond_dropout > 0 and dose is None:  # guidable
        calib = calibrate_seen_guidance(model, seed=seed)
        model.summary["seen_guidance"] = calib
        model.generator.seen_scale = calib["scale"]
        if talk and calib["groups"]:
            print(f"scdit: guidance scale of seen perturbations {calib['scale']:g} (closest to "
                  f"{calib['groups']} stored training groups among {calib['scales']})")
    return model


def load(path: str | Path) -> ScDiT:
    """Load a model saved with :meth:`ScDiT.save`."""
    return ScDiT.load(path)
