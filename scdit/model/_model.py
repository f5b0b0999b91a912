"""The fitted model: predict cells under perturbations, sample, save and load."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..conditions import stand_ins
from ..config import SamplingConfig, ScDiTConfig
from ..data import ConditionVocab, CovariateVocab, to_log1p
from ..effects import EffectConfig
from ..flow import SOLVERS
from ..models import VelocityField
from ..tokenizers import Tokenizer
from ._cells import CellStore, covariates_arg, labels_arg, n_cells_arg, take
from ._encoded import ENCODE_ROWS, EncodedCells, context_means
from ._io import read_model, write_model
from ._output import (
    CellWriter,
    LabelSink,
    OutputBuilder,
    chunk_rows,
    label_finisher,
    target_prior_genes,
)
from ._sampler import Generator, SampleJob, progress_bar, sampling_record
from ._seeds import CELLS, LabelSeeds
from ._spread import resolve_spread
from ._targets import EffectTargets


class ScDiT:
    """A perturbation-conditioned DiT trained with rectified flow.

    Create one with :func:`scdit.fit` or :func:`scdit.load`. Generated cells come back in the
    training gene space and representation (counts in → integer counts out, log1p in → log1p
    out). A prediction is the **generator** (the DiT's flow from noise or from control cells)
    composed with **effect estimates** (:mod:`scdit.effects`) that may set the mean of the
    generated cells per context; ``predict(effects="none")`` is the generator alone, and
    ``uns["scdit"]["mean_set_by"]`` says which estimator set each mean.

    Genes the tokenizer does not model are copied from each generated cell's *reference cell*:
    the source cell it was transported from when ``source=`` is given, otherwise a training
    cell of the same perturbation (or, for perturbations unseen in training, a control cell)
    drawn at random from the model's stored reference cells. For counts, the reference cell's
    library size also sets the scale of the modelled genes.
    """

    def __init__(self, config: ScDiTConfig, vocab: ConditionVocab, covariates: CovariateVocab,
                 tokenizer: Tokenizer, field: VelocityField, var_names: Sequence[str],
                 reference: ad.AnnData, summary: dict[str, Any] | None = None):
        self.config = config
        self.vocab = vocab
        self.covariates = covariates
        self.tokenizer = tokenizer
        self.field = field.eval()
        self.var_names = pd.Index(var_names)
        self.reference = reference
        self.summary = dict(summary or {})
        self.gene_index = self.var_names.get_indexer(list(tokenizer.genes))
        self.cells = CellStore(reference, config, vocab, covariates, self.var_names,
                               self.gene_index)
        self.generator = Generator(field, config, vocab, covariates, (tokenizer.n_tokens,
                                   tokenizer.patch_size), *_guidance_scales(self.summary, config))
        self._seen = {self.cells.canonical(c) for c in vocab.conditions}
        self.targets = EffectTargets(self.cells, tokenizer, self.encode, self._seen,
                                     match_seen=config.data.dose_key is None)

    # ------------------------------------------------------------------ properties
    @property
    def condition_key(self) -> str:
        """``obs`` column of perturbation labels."""
        return self.config.data.condition_key

    @property
    def representation(self) -> str:
        """``"counts"`` or ``"log1p"``: the training input and prediction output space."""
        return self.config.data.representation

    def __repr__(self) -> str:
        return (f"ScDiT({len(self.vocab.atoms)} perturbations, {len(self.var_names)} genes "
                f"({self.tokenizer.n_genes} modelled in {self.tokenizer.n_tokens} tokens), "
                f"covariates={list(self.covariates.keys)}, representation={self.representation!r})")

    def encode(self, cells: ad.AnnData) -> torch.Tensor:
        """Tokens ``(n, T, P)`` of cells in the training genes and representation (encoded
        :data:`ENCODE_ROWS` cells at a time)."""
        out = torch.empty((cells.n_obs, self.tokenizer.n_tokens, self.tokenizer.patch_size))
        for s in range(0, cells.n_obs, ENCODE_ROWS):
            part = cells[s:s + ENCODE_ROWS]
            X, obs = part.X, part.obs
            counts = X if self.representation == "counts" else None
            model_in = self.tokenizer.prepare(to_log1p(X, self.representation), counts=counts,
                                              obs=obs)
            dense = model_in.toarray() if sp.issparse(model_in) else np.asarray(model_in)
            out[s:s + len(obs)] = self.tokenizer.encode(
                torch.as_tensor(np.asarray(dense, dtype=np.float32)))
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(self, perturbation: str, n_cells: int = 100, *,
               covariates: Mapping[str, str] | pd.DataFrame | None = None,
               dose: float | str | None = None, seed: int | None = None,
               effects: str | EffectConfig | None = "auto", sampling: SamplingConfig | None = None,
               source_tokens: torch.Tensor | None = None, output: str = "log1p",
               device: str | None = None, verbose: bool = True) -> np.ndarray:
        """Generate the modelled genes of ``n_cells`` cells, without assembling an AnnData.

        Returns log1p expression ``(n_cells, n_modelled)``, or with ``output="tokens"`` the
        generated tokens ``(n_cells, n_tokens, patch_size)`` (decode them with
        ``model.tokenizer.decode``; shifted as for the log1p output: in contexts the label was
        seen in, their decoded mean is their mean before clipping at 0). ``covariates`` is a
        mapping (one context for all cells) or a DataFrame with one row per cell.
        ``source_tokens`` ``(n_cells, T, P)`` are the tokens a control-source model (or
        ``SamplingConfig(invert=True)``) starts from (encoded control cells, see
        :meth:`encode`); without them it starts from stored control cells of the context. The
        noise is drawn on the CPU so that a seed gives the same cells on any device (up to
        floating-point error). See :meth:`predict` for the other arguments (``verbose``: the
        progress bar).
        """
        if output not in ("log1p", "tokens"):
            raise ValueError(f"output must be 'log1p' or 'tokens', got {output!r}.")
        self._check_known([perturbation])
        n, covariates = n_cells_arg(n_cells), covariates_arg(covariates, frames=True)
        seed = _seed_arg(seed)
        if seed is not None:  # the flow noise predict(perturbation, seed=seed) uses
            seed = LabelSeeds(seed, self.cells.canonical(perturbation)).torch_seed()
        sampling = _sampling_arg(sampling)
        job, est, cov_df = self._prepare(perturbation, n, covariates, dose, seed,
                                         self._model_effects(EffectConfig.coerce(effects)),
                                         sampling, source_tokens, None, device)
        x0 = torch.empty((n, *self.generator.shape))

        def keep(start: int, tokens: torch.Tensor) -> None:
            x0[start:start + len(tokens)] = tokens

        job.sink, dev = keep, self._device(device)
        bar = progress_bar(n, sampling.batch_size, _verbose_arg(verbose), "sample")
        try:
            self.generator.run([job], sampling, dev, bar)
        finally:
            if bar is not None:
                bar.close()
        x0 = self.targets.shift(est or {}, x0, cov_df, perturbation)
        if output == "tokens":
            return x0.numpy()
        bs = sampling.batch_size
        out = [self.tokenizer.decode(x0[s:s + bs].to(dev), obs=None if cov_df is None
                                     else cov_df.iloc[s:s + bs]).cpu().numpy()
               for s in range(0, n, bs)]
        return np.concatenate(out) if out else np.zeros((0, len(self.tokenizer.genes)),
                                                         np.float32)

    def _check_known(self, labels: Sequence[str]) -> list[str]:
        """``labels`` as the generator encodes them, those predicted as a typical perturbation
        (:func:`~scdit.conditions.stand_ins`, warned) as control; a ``KeyError`` for other
        unknown members, saying why and how to predict them."""
        typical = stand_ins(labels, self.vocab.unknown_atoms(labels), self.vocab.members,
                            self.config.conditions.features, self.var_names, self.vocab.atoms,
                            self.config.data.dose_key is not None)
        return [self.vocab.control if lab in typical else lab for lab in labels]

    def _model_effects(self, effects: EffectConfig) -> EffectConfig:
        """``effects`` as this model can apply them: models fitted with ``dose_key`` use the
        generator alone (training means depend on dose; ``"always"`` is an error)."""
        if self.config.data.dose_key is None or effects.mode == "none":
            return effects
        if effects.mode == "always":
            raise ValueError("Effect estimates are not available for models fitted with "
                             "dose_key (training means depend on dose); use effects='none'.")
        return EffectConfig(mode="none", target_prior=effects.use_target_prior)

    def _device(self, device: str | None) -> torch.device:
        return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _prepare(self, label: str, n: int, covariates, dose, seed: int | None,
                 effects: EffectConfig, sampling: SamplingConfig,
                 source_tokens: torch.Tensor | None, source_cells: ad.AnnData | None,
                 device: str | None, source_means: dict | None = None,
                 auto_invert: EncodedCells | None = None
                 ) -> tuple[SampleJob, dict | None, pd.DataFrame | None]:
        """The integration of ``n`` cells of ``label`` (its ``sink`` left to the caller), the
        estimates that set their means per context (``None``: the generator alone) and the
        covariate frame. ``source_means``: the mean token per context of ``source_cells``
        where the caller already has them (they do not depend on the label).
        ``auto_invert``: the tokens of the label's distinct source cells, inverted when a seen
        mean sets the label's mean in every context or a member is known only through its
        features (``SamplingConfig.invert=None``)."""
        self.field.to(self._device(device))
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else
                                            int(np.random.default_rng().integers(2**31)))
        cells = self.cells
        invert = self.generator.inverts(sampling)
        if (self.config.flow.source == "control" or invert) and source_tokens is None:
            if isinstance(covariates, pd.DataFrame):
                raise ValueError("A model with a control source (or invert=True) needs source "
                                 "cells per row; use predict(..., source=control_cells) for "
                                 "per-cell covariates.")
            rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
            ref = cells.control_cells(label, n, covariates, rng)
            source_tokens, covariates = self.encode(ref), cells.frame(ref)
        cov_df = cells.covariate_frame(covariates, n)
        if source_tokens is not None:
            if not isinstance(source_tokens, EncodedCells):
                source_tokens = torch.as_tensor(source_tokens)
            if len(source_tokens) != n:
                raise ValueError(f"source_tokens has {len(source_tokens)} rows for {n} cells.")
        if source_cells is not None and source_tokens is not None and effects.mode != "none":
            means = source_means if source_means is not None else context_means(
                cells, EncodedCells(self.encode, source_cells), cells.frame(source_cells))
        else:
            means = context_means(cells, source_tokens, cov_df)
        estimates = self.targets.resolve(label, cov_df, effects, means, source_cells)
        if auto_invert is not None and (self.generator.featured_only(label) or estimates and all(
                e.kind == "seen" for e in estimates.values())):
            invert, source_tokens = True, auto_invert  # seen means do not use source means
        covs = self.generator.covariate_codes(label, cov_df, n, cells.seen_in_context)
        weight = self.generator.compose_weight(label, sampling.compose, self._seen)
        job = self.generator.job(label, n, covs, gen=gen, sampling=sampling, weight=weight,
                                 dose=dose, source_tokens=source_tokens, sink=None, invert=invert,
                                 seen_context=self.generator.in_seen_contexts(
                                     label, cov_df, cells.seen_in_context))
        return job, estimates or None, cov_df

    def predict(self, perturbations: str | Sequence[str], n_cells: int | None = None, *,
                covariates: Mapping[str, str] | None = None, source: ad.AnnData | None = None,
                layer: str | None = None, dose: float | str | None = None,
                seed: int | None = None, effects: str | EffectConfig | None = "auto",
                sampling: SamplingConfig | None = None, representation: str | None = None,
                device: str | None = None, verbose: bool = True) -> ad.AnnData:
        """Generate cells under each perturbation, in the training genes and representation.

        Parameters
        ----------
        perturbations
            A label or list of labels (combinations as ``"A+B"``, any order).
        n_cells
            Cells per perturbation. Default 100, or the number of ``source`` cells (a larger
            value uses every source cell ``n_cells // n_source`` times and draws the remainder
            without replacement; a smaller one draws a subset).
        covariates
            One value per covariate key (e.g. ``{"cell_type": "k562"}``). Default: read from
            ``source`` cells, else drawn with the reference cells of that perturbation.
        source
            Cells whose context to predict (e.g. control cells of one cell type): their
            covariates, library sizes and unmodelled genes are carried over. Must have the
            training genes and representation. A model fitted with ``source="control"``
            transports these very cells (cell ``i`` of the output is source cell ``i`` under the
            perturbation); without ``source`` it transports stored control cells of the context
            (``covariates``), or of the contexts the perturbation was seen in. One cell per
            source cell, a noise-source model by default returns each source cell's
            counterfactual (``SamplingConfig.invert``) for a seen perturbation or one known
            only through its features (without ``source``: of distinct stored control
            cells).
        layer
            Layer of ``source`` holding expression (default ``.X``).
        dose
            Dose of the perturbation(s) for models fitted with ``dose_key`` (a number, or
            ``"a+b"`` for the members of a combination).
        seed
            Seed for reproducible output; ``None`` draws a fresh one. A label's cells depend
            only on the seed and the label (its canonical form: ``"B+A"`` is ``"A+B"``), with
            the other arguments, not on the other labels or their order in the list; a label
            listed twice gives the same cells twice. ``uns["scdit"]["seed"]`` records the seed
            used (the drawn one for ``None``), so any prediction can be repeated. Inverted
            cells (``uns["scdit"]["inverted"]``) of given source cells do not depend on it.
        effects
            What sets the mean of the generated cells (:class:`scdit.EffectConfig`; see
            :mod:`scdit.effects` and the user guide). ``"auto"`` (default): an effect estimate
            for labels seen in training with training cells in every requested context (their
            training mean, empirical-Bayes shrunk where the context has enough perturbations,
            by at most ``scdit.effects.SEEN_LIMIT`` standard errors;
            control included), for combinations unseen in training whose members and control
            have training cells in the context (the additive estimate of the members' training
            effects, shrunk likewise) and for perturbations never seen in the context but seen
            in ≥ 3 others (a held-out context: its control mean plus the effect estimated from
            the other contexts by mean shift, kernel or slope, chosen by leave-one-context-out;
            with the genes tokenizer projected onto the top principal axes of expression); the
            generator alone for the rest (e.g. an unseen single known through its features, a
            label seen in some but not all requested contexts; a measured gene the model cannot
            place is a typical perturbation, the user guide's "stand-in"). The generator supplies
            the spread: each context's generated cells are shifted by one constant per
            coordinate so that their mean is the estimate; genes outside the model are shifted
            alike. ``"none"``: **the generator alone**. ``"always"``: an estimate for every
            label (its own training mean where seen; error where none applies). Or an
            ``EffectConfig`` (``shrink``, ``target_prior``). The held-out-split benchmarks in
            docs/results.md report the default beside the generator alone.
        sampling
            ODE integration and finishing (:class:`scdit.SamplingConfig`: ``steps``,
            ``solver``, ``guidance_scale``, ``compose``, ``batch_size``, ``center_noise``,
            ``precision``, ``unmodelled_genes``, ``spread``); default: the model's
            :class:`~scdit.FlowConfig` values, bf16 autocast where the hardware multiplies bf16
            natively. Labels whose velocity is their joint condition alone (all but unseen
            combinations composed from their members) are integrated in shared batches of up to
            ``batch_size`` cells; only network evaluations are shared, so a label's cells do not
            depend on the others (up to floating-point rounding of the batched products). Cells
            are decoded ``batch_size`` (≤ 2^21 values) at a time: memory beyond the output grows
            only with the cells carried over (reference cells, and a label's generated tokens
            where an estimate sets its mean or its spread is calibrated).
        representation
            ``None`` (default): the training representation. ``"log1p"``: log1p(normalize_total
            1e4) expression as the model generates it, also for a model trained on counts (the
            default converts each generated cell to counts with its reference cell's library
            size, times, where a seen perturbation's training mean sets the mean, its depth
            factor ``uns["scdit"]["depth_factor"]``: its training cells' median library
            size over control's in the context).
        device
            Where to integrate (default: CUDA if available, else CPU).
        verbose
            A progress bar (tqdm, stderr) over the cells integrated, shown once a multi-batch
            call has run :data:`scdit.model.PROGRESS_DELAY` seconds; ``False`` silences it.

        Returns
        -------
        AnnData with ``obs[condition_key]``, the covariates and ``obs["reference_cell"]``;
        ``uns["scdit"]`` holds the sampling settings (``"precision"``: ``"bf16"`` or ``"fp32"``,
        as used), ``"invert"`` (the setting) and ``"inverted"`` (the labels whose cells are
        counterfactuals of control cells, :class:`~scdit.SamplingConfig`),
        ``"mean_set_by"`` (per ``"label"`` or ``"label | context"``: ``"generator"``,
        ``"seen"``, ``"additive"``, ``"additive_shrunk"``, ``"context:<method>"`` or
        ``"typical"``, an unplaceable measured gene) and, for held-out contexts,
        ``"context_estimator"`` (the estimator chosen, its parameter, its
        leave-one-context-out Pearson and the mean shift's) and, for counts output,
        ``"depth_factor"`` (per ``"label"`` or ``"label | context"`` whose factor is not 1).
        """
        out_rep = self.representation if representation is None else representation
        if out_rep not in ("log1p", "counts"):
            raise ValueError(f"representation must be None, 'log1p' or 'counts', got "
                             f"{representation!r}.")
        if out_rep == "counts" and self.representation != "counts":
            raise ValueError("representation='counts' needs a model trained on counts; this one "
                             "was trained on log1p data (use representation=None or 'log1p').")
        labels, verbose = labels_arg(perturbations), _verbose_arg(verbose)
        effects, sampling, seed = self._model_effects(EffectConfig.coerce(effects)), \
            _sampling_arg(sampling), _seed_arg(seed)
        width = self.vocab.encode(self._check_known(labels)).shape[1]  # before any work
        covariates = covariates_arg(covariates)
        self.cells.check_covariates(covariates)
        if n_cells is not None:
            n_cells_arg(n_cells)
        for label in dict.fromkeys(labels):  # dose errors before any work
            self.generator.dose_tensor(label, dose, 1, width)
        base = seed if seed is not None else int(np.random.default_rng().integers(2**63))
        cells = self.cells
        src = cells.check_source(source, layer) if source is not None else None
        kappa, sampling = resolve_spread(self, sampling, device)  # after the input checks
        transport_only = self.config.flow.source == "control"
        transport = transport_only or self.generator.inverts(sampling)
        auto_invert = sampling.invert is None and not transport_only \
            and "reflow" not in self.summary  # measured: not reflowed
        per_label = n_cells_arg(n_cells) if n_cells is not None else \
            src.n_obs if src is not None else 100
        out = OutputBuilder(self.var_names, per_label * len(labels))
        set_by, chosen, inverted, depth, scales = {}, {}, [], {}, {}
        rows = chunk_rows(sampling.batch_size, len(self.var_names))
        given_all = take(src, np.arange(src.n_obs), covariates) \
            if transport and src is not None and effects.mode != "none" else None
        shared: dict = {}  # what does not depend on the label: the source cells' means

        def jobs():
            for label in labels:
                seeds = LabelSeeds(base, cells.canonical(label))
                rng = seeds.rng(CELLS)
                if transport and src is None:
                    ref = cells.control_cells(label, 100 if n_cells is None
                                              else n_cells_arg(n_cells), covariates, rng)
                else:
                    ref = cells.reference_cells(label, src, n_cells, covariates, rng,
                                                self.generator.featured_only(label))
                if transport and not transport_only and len(set(ref.rows)) < ref.n_obs:
                    warnings.warn(f"invert=True repeats reference cells of {label!r}: a cell "
                                  "is a deterministic function of its reference cell, so the "
                                  "repeats are copies. Predict at most one cell per source "
                                  "cell.", UserWarning, stacklevel=3)
                given = ref if transport and src is None and effects.mode != "none" \
                    else given_all
                if given is given_all and given is not None and "means" not in shared:
                    shared["means"] = context_means(cells, EncodedCells(self.encode, given),
                                                     cells.frame(given))
                prior = target_prior_genes(cells, self.summary, label) \
                    if effects.use_target_prior else None
                writer = CellWriter(out, cells, self.tokenizer, label, ref, seeds, out_rep,
                                    rows, prior)
                job, est, cov_df = self._prepare(
                    label, ref.n_obs, cells.frame(ref), dose, seeds.torch_seed(), effects,
                    sampling, EncodedCells(self.encode, ref) if transport else None, given,
                    device, shared.get("means") if given is given_all else None,
                    EncodedCells(self.encode, ref.start) if auto_invert and ref.start else None)
                factors, report = self.targets.depth_factors(label, ref, est) \
                    if out_rep == "counts" and est else (None, {})
                depth.update(report)
                job.sink = LabelSink(writer, ref.n_obs, self.generator.shape,
                                     label_finisher(self.targets, job, ref, est, cov_df, seeds,
                                                    writer, factors, sampling.unmodelled_genes,
                                                    kappa))
                inverted.extend([label] if job.invert else [])
                scales.update({label: job.scale} if job.scale != 1 else {})
                by, ce = self.targets.report(label, est)
                set_by.update(by or {label: "generator"})
                chosen.update(ce)
                yield job

        bar = progress_bar(per_label * len(labels), sampling.batch_size, verbose, "predict")
        try:
            self.generator.run(jobs(), sampling, self._device(device), bar)
        finally:
            if bar is not None:
                bar.close()
        out = out.build()
        out.obs_names_make_unique()
        out.uns["scdit"] = {**sampling_record(sampling, self.config.flow, self._device(device),
                                               transport_only), "guidance": scales, "seed": base,
                            "representation": out_rep, "effects": effects.mode,
                            "inverted": list(dict.fromkeys(inverted)),
                            "shrink": "auto" if effects.shrink is None else effects.shrink,
                            "target_prior": effects.use_target_prior, "mean_set_by": set_by}
        out.uns["scdit"].update({**({"context_estimator": chosen} if chosen else {}),
                                 **({"depth_factor": depth} if depth else {})})
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``reference.h5ad`` into ``path``."""
        return write_model(path, self, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> ScDiT:
        """Load a model written by :meth:`save`."""
        return cls(**read_model(path))


def _guidance_scales(summary: dict, config: ScDiTConfig) -> tuple[float, float]:
    """Guidance scales of labels known only through their features (the fit's
    :func:`scdit.conditions.feature_reliability`) and of perturbed labels seen in training (the
    fit's ``calibrate_seen_guidance``); 1 for models saved without them and for models whose
    unconditional branch was not trained (``DiTConfig.cond_dropout=0``, or straightened by
    :func:`scdit.reflow`, which fine-tunes without condition dropout)."""
    if "reflow" in summary or not config.dit.cond_dropout:
        return 1.0, 1.0
    return (float(summary.get("feature_reliability", {}).get("scale", 1.0)),
            float(summary.get("seen_guidance", {}).get("scale", 1.0)))


def _seed_arg(seed) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")
    return int(seed)


def _verbose_arg(verbose) -> bool:
    if not isinstance(verbose, bool | np.bool_):
        raise TypeError(f"verbose must be True or False, got {verbose!r}.")
    return bool(verbose)


def _sampling_arg(sampling) -> SamplingConfig:
    if sampling is None:
        return SamplingConfig()
    if not isinstance(sampling, SamplingConfig):
        raise TypeError(f"sampling must be a scdit.SamplingConfig or None, got {sampling!r}.")
    if sampling.solver is not None and sampling.solver not in SOLVERS:
        raise ValueError(f"Unknown solver {sampling.solver!r} in SamplingConfig; choose from "
                         f"{list(SOLVERS)} (or None for the model's default).")
    return sampling
