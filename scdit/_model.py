"""The fitted model: predict cells under perturbations, sample, save and load."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from . import _context
from ._config import ScDiTConfig
from ._context import (
    BASIS_CELLS,
    MIN_CONTEXTS,
    apply_effect,
    context_effect,
    expression_basis,
    pc_basis,
    project_effect,
)
from ._shrinkage import MAX_DIM, MIN_EFFECTS, effect_prior, group_moments, posterior_effect
from .conditions import ConditionEncoder
from .data._representation import (
    clipped_mean_shift,
    counts_to_log1p,
    detect_representation,
    library_size,
    log1p_to_counts,
    to_log1p,
)
from .data._setup import get_matrix
from .data._vocab import ConditionVocab, CovariateVocab, parse_doses
from .flow import composed, guided, integrate
from .models import DiT, VelocityField
from .tokenizers import GeneTokenizer, Tokenizer, tokenizer_from_state

FORMAT_VERSION = 1
LIBRARY_KEY = "_scdit_library_size"


def build_field(cfg: ScDiTConfig, tokenizer: Tokenizer, vocab: ConditionVocab,
                covariates: CovariateVocab, features: np.ndarray | None = None) -> VelocityField:
    """Fresh velocity field sized for the tokenizer and vocabularies.

    ``features`` is the perturbation feature table (seen atoms, then featured ones); when the
    configuration has features but none are given (loading), a zero table of the right shape is
    made for ``load_state_dict`` to fill.
    """
    d = cfg.dit
    dit = DiT(tokenizer.n_tokens, tokenizer.patch_size, tokenizer.n_features, d.hidden_size,
              d.depth, d.num_heads, d.mlp_ratio)
    gene_init = getattr(tokenizer, "gene_embedding_init", None)  # user gene features (fit only)
    if gene_init is not None:
        dit.embed.init_identity(gene_init)
    c = cfg.conditions
    if features is None and c.features != "none":
        features = np.zeros((len(vocab.atoms) + len(vocab.featured), c.n_features), np.float32)
    encoder = ConditionEncoder(len(vocab.atoms), covariates.sizes(), d.hidden_size,
                               features=features, residual_dropout=c.residual_dropout,
                               use_dose=cfg.data.dose_key is not None)
    return VelocityField(dit, encoder)


class ScDiT:
    """A perturbation-conditioned DiT trained with rectified flow.

    Create one with :func:`scdit.fit` or :func:`scdit.load`. Generated cells come back in the
    training gene space and representation (counts in → integer counts out, log1p in → log1p
    out). Genes the tokenizer does not model are copied from each generated cell's *reference
    cell*: the source cell it was transported from when ``source=`` is given, otherwise a
    training cell of the same perturbation (or, for perturbations unseen in training, a control
    cell) drawn at random from the model's stored reference cells. For counts, the reference
    cell's library size also sets the scale of the modelled genes.
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

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample(self, perturbation: str, n_cells: int = 100, *, covariates: Mapping[str, str] |
               pd.DataFrame | None = None, dose: float | str | None = None,
               guidance_scale: float = 1.0, steps: int | None = None,
               solver: str | None = None, seed: int | None = None, compose: float | None = None,
               batch_size: int = 2048, device: str | None = None,
               source_tokens: torch.Tensor | None = None, output: str = "log1p",
               calibrate: str | None = None, anchor: bool | str | None = None,
               shrink: bool | None = None, _anchor_out: dict | None = None,
               _source_cells: ad.AnnData | None = None) -> np.ndarray:
        """Generate log1p expression of the modelled genes, shape ``(n_cells, n_modelled)``.

        ``output="tokens"`` returns the generated tokens ``(n_cells, n_tokens, patch_size)``
        instead (decode them with ``model.tokenizer.decode`` or ``decode_counts``).

        ``covariates`` is a mapping (one context for all cells) or a DataFrame with one row per
        cell. ``device`` defaults to CUDA when available, else CPU; the noise is drawn on the
        CPU so that a seed gives the same cells on any device (up to floating-point error).
        ``source_tokens`` ``(n_cells, T, P)`` are the tokens the flow starts from for a model
        trained with ``source="control"`` (encoded control cells; :meth:`predict` fills them
        in); without them such a model starts from stored control cells of the context.
        See :meth:`predict` for the other arguments.
        """
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.field.to(dev)
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else
                                            int(np.random.default_rng().integers(2**31)))
        if self.config.flow.source == "control" and source_tokens is None:
            if isinstance(covariates, pd.DataFrame):
                raise ValueError("A model with a control source needs source cells per row; use "
                                 "predict(..., source=control_cells) for per-cell covariates.")
            rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
            ref = self._control_cells(perturbation, n_cells, covariates, rng)
            source_tokens = self._encode_cells(ref)
            covariates = ref.obs[list(self.covariates.keys)] if self.covariates.keys else None
        cov_df = self._covariate_frame(covariates, n_cells)
        atoms = torch.as_tensor(self.vocab.encode([perturbation] * n_cells))
        covs = torch.as_tensor(self.covariates.encode(cov_df)) if self.covariates.keys else \
            torch.zeros((n_cells, 0), dtype=torch.long)
        centre = None
        if source_tokens is not None and self.config.flow.source == "control" \
                and self.config.flow.center:
            source_tokens = torch.as_tensor(source_tokens).float()
            centre = _context_centres(source_tokens, covs)  # (n, T, P)
        context = covs.clone()  # before any fallback: calibration groups cells by context
        if self.covariates.keys and self._context_fallback():
            unseen = ~self._seen_in_context(perturbation, cov_df)
            covs[torch.as_tensor(unseen)] = 0  # never seen in this context: context from source
        doses = self._dose_tensor(perturbation, dose, n_cells, atoms.shape[1])
        if output not in ("log1p", "tokens"):
            raise ValueError(f"output must be 'log1p' or 'tokens', got {output!r}.")
        if source_tokens is not None and len(source_tokens) != n_cells:
            raise ValueError(f"source_tokens has {len(source_tokens)} rows for {n_cells} cells.")
        if calibrate not in (None, "mean", "cell"):
            raise ValueError(f"calibrate must be None, 'mean' or 'cell', got {calibrate!r}.")
        if calibrate is not None and source_tokens is None:
            raise ValueError("calibrate needs a model fitted with source='control' (it measures "
                             "how far the model moves control cells under the control condition).")
        if shrink not in (None, True, False):
            raise ValueError(f"shrink must be None, True or False, got {shrink!r}.")
        if anchor not in (None, True, False, "interaction"):
            raise ValueError(f"anchor must be None, True, False or 'interaction', got {anchor!r}.")
        if shrink and anchor is False:
            raise ValueError("shrink=True shrinks the training effects that anchor the output; "
                             "it needs anchor=True or None, not anchor=False.")
        if _source_cells is not None and source_tokens is not None and anchor is not False \
                and calibrate is None:  # the given source, before any resampling (anchor only)
            ctx_means = self._source_means(self._encode_cells(_source_cells), _source_cells.obs[
                list(self.covariates.keys)] if self.covariates.keys else None)
        else:
            ctx_means = self._source_means(source_tokens, cov_df)
        if anchor is None:  # default: unseen combinations of seen members; held-out contexts
            anchor = self._auto_anchor(perturbation, cov_df, calibrate, ctx_means)
        anchor_terms = self._anchor_terms(perturbation, cov_df, calibrate, ctx_means,
                                          _source_cells) if anchor else None
        if _anchor_out is not None:  # predict anchors the genes outside the model alike
            _anchor_out["terms"] = anchor_terms
        shrunk = self._shrink_contexts(anchor_terms, shrink) if anchor_terms else set()
        interaction = anchor == "interaction"  # also solve the members and control
        extra = sorted({lab for terms in (anchor_terms or {}).values() for lab, _ in terms
                        if isinstance(lab, str) and lab != perturbation}) if interaction else []
        t, p = self.tokenizer.n_tokens, self.tokenizer.patch_size
        sigma = self.config.flow.source_noise if self.config.flow.source == "control" else 1.0
        kw = {"steps": steps or self.config.flow.steps, "solver": solver or self.config.flow.solver}
        gen_tokens, drift = [], []
        anchored = {lab: [] for lab in extra}  # the same starts under the anchor's other labels
        for s in range(0, n_cells, batch_size):
            sl = slice(s, min(n_cells, s + batch_size))
            x1 = torch.randn((sl.stop - sl.start, t, p), generator=gen)  # (b, T, P)
            if source_tokens is not None:
                x1 = source_tokens[sl].float() + sigma * x1
                if centre is not None:
                    x1 = x1 - centre[sl]
            x1 = x1.to(dev)
            v = self._velocity(perturbation, atoms[sl].to(dev), covs[sl].to(dev), guidance_scale,
                               compose, None if doses is None else doses[sl].to(dev))
            x0 = integrate(v, x1, **kw)  # (b, T, P)
            if calibrate is not None:  # the same start under the control condition
                ctrl = torch.zeros_like(atoms[sl, :1]).to(dev)
                xc = integrate(self._velocity(self.vocab.control, ctrl, covs[sl].to(dev),
                                              guidance_scale, None), x1, **kw)
                start = source_tokens[sl].float() - (0 if centre is None else centre[sl])
                drift.append(xc.cpu() - start)  # (b, T, P): where "control" moved the cells
            for lab in extra:
                a = (torch.zeros_like(atoms[sl, :1]) if lab == self.vocab.control else
                     torch.as_tensor(self.vocab.encode([lab] * (sl.stop - sl.start))))
                xa = integrate(self._velocity(lab, a.to(dev), context[sl].to(dev), guidance_scale,
                                              None), x1, **kw)
                anchored[lab].append((xa + (0 if centre is None else centre[sl].to(dev))).cpu())
            if centre is not None:
                x0 = x0 + centre[sl].to(dev)
            gen_tokens.append(x0.cpu())
        if not gen_tokens:
            return np.zeros((0, t, p) if output == "tokens" else (0, len(self.tokenizer.genes)),
                            np.float32)
        x0 = torch.cat(gen_tokens)  # (n, T, P)
        if calibrate is not None:
            drift = torch.cat(drift)
            x0 = x0 - (drift if calibrate == "cell" else _context_centres(drift, context))
        if anchor_terms is not None:
            gens = {lab: torch.cat(v) for lab, v in anchored.items()}
            gens[perturbation] = x0
            x0 = x0 + self._anchor_shift(anchor_terms, gens, cov_df, shrunk,
                                         None if interaction else perturbation, perturbation)
            x0 = self._match_decoded_means(x0, anchor_terms, cov_df)
        if output == "tokens":
            return x0.numpy()
        out = [self.tokenizer.decode(x0[s:s + batch_size].to(dev),  # obs: scVI decodes per batch
                                     obs=cov_df.iloc[s:s + batch_size]).cpu().numpy()
               for s in range(0, n_cells, batch_size)]
        return np.concatenate(out)

    def _context_keys(self, cov_df: pd.DataFrame | None, n: int) -> list[tuple[str, ...]]:
        """Per row, the covariate context as a tuple of strings (``()`` without covariates)."""
        keys = list(self.covariates.keys)
        if not keys:
            return [()] * n
        return [tuple(r) for r in cov_df[keys].astype(str).to_numpy()]

    def _contexts(self, cov_df: pd.DataFrame | None) -> list[tuple[str, ...]]:
        """The distinct covariate contexts of ``cov_df``, in order (``[()]`` without covariates)."""
        return list(dict.fromkeys(self._context_keys(cov_df, len(cov_df) if self.covariates.keys
                                                      else 1)))

    def _anchor_terms(self, label: str, cov_df: pd.DataFrame | None, calibrate: str | None,
                      ctx_means: dict | None = None, source_cells: ad.AnnData | None = None,
                      ) -> dict[tuple[str, ...], list]:
        """Per context: the labels whose training means anchor ``label``, with their weights.

        A label seen in the context anchors to itself; an unseen combination to its members
        (+1 each) and control (``1 - k`` for ``k`` members), all of which must have training
        cells in that context; otherwise a label seen in ≥ 2 other contexts anchors to its
        estimated effect in this one (:meth:`_context_target`; the term is that target tensor).
        """
        if calibrate is not None:
            raise ValueError("anchor and calibrate are alternative corrections; pass only one.")
        if self.config.data.dose_key is not None:
            raise ValueError("anchor is not available for models fitted with dose_key (training "
                             "means depend on dose); use anchor=False.")
        out: dict[tuple[str, ...], list[tuple[str, float]]] = {}
        for ctx in self._contexts(cov_df):
            if self._anchor_mean(label, ctx) is not None:
                out[ctx] = [(label, 1.0)]
                continue
            members = self.vocab.members(label)
            terms = [(m, 1.0) for m in members] + [(self.vocab.control, 1.0 - len(members))]
            missing = [m for m, _ in terms if self._anchor_mean(m, ctx) is None]
            target = self._context_target(label, ctx, ctx_means, source_cells) \
                if len(members) < 2 or missing else None
            if target is not None:
                out[ctx] = [(target, 1.0)]
                continue
            if len(members) < 2 or missing:
                where = f" in context {dict(zip(self.covariates.keys, ctx, strict=True))}" if ctx else ""
                raise ValueError(
                    f"anchor=True needs training cells of {missing or [label]}{where} (a seen "
                    f"perturbation anchors to its own training mean, an unseen combination to "
                    f"its members', a held-out context to its effect in ≥ 2 other contexts); "
                    f"{label!r} cannot be anchored. Use anchor=False.")
            out[ctx] = terms
        return out

    def _auto_anchor(self, label: str, cov_df: pd.DataFrame | None, calibrate: str | None,
                     ctx_means: dict | None = None) -> bool:
        """``anchor=None``: whether ``label`` is a combination unseen in training whose members
        and control all have training cells in every requested context, or, in every requested
        context, a perturbation never seen there but seen in at least
        :data:`MIN_CONTEXTS` others (a held-out context)."""
        if calibrate is not None or self.config.data.dose_key is not None:
            return False
        contexts = self._contexts(cov_df)
        if self.covariates.keys and all(
                self._anchor_mean(label, ctx) is None
                and len(self._context_pool(label, ctx)) >= MIN_CONTEXTS
                and (ctx in (ctx_means or {}) or self._anchor_mean(self.vocab.control, ctx)
                     is not None) for ctx in contexts):
            return True
        members = self.vocab.members(label)
        canonical = {self._canonical(c) for c in self.vocab.conditions}
        if len(members) < 2 or self._canonical(label) in canonical:
            return False
        return all(self._anchor_mean(m, ctx) is not None for ctx in contexts
                   for m in (*members, self.vocab.control))

    def _source_means(self, source_tokens: torch.Tensor | None,
                      cov_df: pd.DataFrame | None) -> dict[tuple[str, ...], np.ndarray]:
        """Per context of ``cov_df``: the mean source token ``(T·P,)`` (empty without source)."""
        if source_tokens is None:
            return {}
        flat = torch.as_tensor(source_tokens).double().flatten(1).numpy()
        ctx_of = self._context_keys(cov_df, len(flat))
        return {ctx: flat[[i for i, c in enumerate(ctx_of) if c == ctx]].mean(0)
                for ctx in dict.fromkeys(ctx_of)}

    def _context_pool(self, label: str, ctx: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Training contexts other than ``ctx`` with stored cells of ``label`` and control."""
        if not self.covariates.keys:
            return []
        cache = self.__dict__.setdefault("_anchor_cache", {})
        if "contexts" not in cache:
            obs = self.reference.obs[list(self.covariates.keys)].astype(str)
            cache["contexts"] = list(dict.fromkeys(map(tuple, obs.to_numpy())))
        lab, ctrl = self._canonical(label), self._canonical(self.vocab.control)
        return [c for c in cache["contexts"] if c != ctx
                and lab in self._anchor_stats(c) and ctrl in self._anchor_stats(c)]

    def _context_target(self, label: str, ctx: tuple[str, ...], ctx_means: dict | None,
                        source_cells: ad.AnnData | None = None) -> torch.Tensor | None:
        """Anchor mean ``(T, P)`` of ``label`` in a context where it has no training cells:
        the context's control mean (its source cells', else its stored control cells') plus the
        effect estimated from the other contexts by :func:`scdit._context.context_effect` (in
        the units of :meth:`_anchor_scale`); ``None`` with fewer than two such contexts.

        Where the token coordinates are log1p genes, the estimate over all genes (the modelled
        ones and, with the same weights and slope, those outside the model) is projected onto
        the top principal axes of the training cells' expression (:meth:`_effect_basis`); the
        unmodelled genes' part is kept in the estimator's ``info["gene_effect"]`` for
        :meth:`_gene_target`."""
        pool = self._context_pool(label, ctx)
        c = (ctx_means or {}).get(ctx)
        if c is None:
            stats = self._anchor_stats(ctx).get(self._canonical(self.vocab.control))
            c = None if stats is None else stats[0]
        if len(pool) < 2 or c is None:
            return None
        lab, ctrl = self._canonical(label), self._canonical(self.vocab.control)
        s = self._anchor_scale()
        C = np.stack([self._anchor_stats(k)[ctrl][0] for k in pool]) * s
        E = np.stack([self._anchor_stats(k)[lab][0] for k in pool]) * s - C
        est, info = context_effect(E, C, c * s, basis=self._control_basis(pool))
        info["c_from_source"] = ctx in (ctx_means or {})
        if info["c_from_source"] and source_cells is not None and len(self._unmodelled()):
            rows = [i for i, k in enumerate(self._context_keys(
                source_cells.obs[list(self.covariates.keys)], source_cells.n_obs)) if k == ctx]
            if rows:  # the unmodelled genes' control mean, from the same source cells as c
                info["c_genes"] = self._log1p_mean(source_cells[rows])
        basis = self._effect_basis()
        if basis is not None:
            est = self._project_estimate(label, ctx, est, info, basis)
        self.__dict__.setdefault("_anchor_cache", {})[("context_info", lab, ctx)] = info
        shape = (self.tokenizer.n_tokens, self.tokenizer.patch_size)
        return torch.as_tensor((c * s + est) / s).reshape(shape)

    def _project_estimate(self, label: str, ctx: tuple[str, ...], est: np.ndarray, info: dict,
                          basis: np.ndarray) -> np.ndarray:
        """The estimated effect ``est`` (token coordinates, log1p units) completed with the
        unmodelled genes' estimate and projected onto ``basis`` ``(n_vars, k)``; returns the
        modelled genes' part, stores the unmodelled part in ``info["gene_effect"]``."""
        n, cols = len(self.tokenizer.genes), self._unmodelled()
        delta = np.zeros(len(self.var_names))
        delta[self.gene_index] = est[:n]
        if len(cols):
            pool, ctrl = self._context_pool(label, ctx), self.vocab.control
            Cu = np.stack([self._gene_mean(ctrl, k) for k in pool])
            Eu = np.stack([self._gene_mean(label, k) for k in pool]) - Cu
            cu = info.get("c_genes", self._gene_mean(ctrl, ctx))
            delta[cols] = apply_effect(info, Eu, Cu, Cu.mean(0) if cu is None else cu)
        delta = project_effect(delta, basis)
        info["gene_effect"] = delta[cols]
        info["effect_rank"] = int(basis.shape[1])
        out = np.array(est, dtype=np.float64)
        out[:n] = delta[self.gene_index]
        return out

    def _effect_basis(self) -> np.ndarray | None:
        """Top :data:`scdit._context.EFFECT_RANK` principal axes ``(n_vars, k)`` of the log1p
        expression (all genes) of the stored training cells, onto which a held-out context's
        estimated effect is projected; ``None`` unless the token coordinates are log1p genes
        (the value-encoded genes tokenizer) or when there are too few cells or genes. Cached.

        Measured on Kang 2018 (each of the 7 cell types held out, no model): Pearson Δ of the
        estimate 0.861 → 0.907 for CD4 T cells, 0.753 → 0.831 for NK cells, within ±0.01
        elsewhere, and unchanged (±0.006) for the 5 glioblastoma patients (benchmarks/RESULTS.md).
        """
        cache = self.__dict__.setdefault("_anchor_cache", {})
        if "effect_basis" not in cache:
            tok, basis = self.tokenizer, None
            if isinstance(tok, GeneTokenizer) and tok.rank is None:
                n = self.reference.n_obs
                rows = np.arange(n) if n <= BASIS_CELLS else np.sort(
                    np.random.default_rng(0).choice(n, BASIS_CELLS, replace=False))
                X = self._log1p_columns(self.reference[rows], np.arange(len(self.var_names)))
                basis = expression_basis(X, _context.EFFECT_RANK)  # densifies what it needs
            cache["effect_basis"] = basis
        return cache["effect_basis"]

    def _control_basis(self, pool: list[tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """:func:`scdit._context.pc_basis` of the stored control cells of the contexts ``pool``
        (tokens in the units of :meth:`_anchor_scale`); cached, the SVD being the costly part."""
        cache = self.__dict__.setdefault("_anchor_cache", {})
        key = ("control_basis", tuple(pool))
        if key not in cache:
            ctrl = self._canonical(self.vocab.control)
            rows = np.concatenate([r[lab == ctrl] for r, lab in map(self._context_rows, pool)])
            tokens = self._encode_cells(self.reference[rows]).double().flatten(1).numpy()
            cache[key] = pc_basis(tokens * self._anchor_scale())
        return cache[key]

    @staticmethod
    def _estimated(terms: list) -> bool:
        """Whether a context's anchor ``terms`` are a held-out context's estimated target (one
        tensor term) rather than training labels with weights."""
        return any(not isinstance(lab, str) for lab, _ in terms)

    def _anchor_stats(self, ctx: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Per canonical label with stored training cells in context ``ctx``: the mean token
        ``(T·P,)`` and its squared standard error (``None`` for a single cell); cached."""
        cache = self.__dict__.setdefault("_anchor_cache", {})
        if ctx not in cache:
            rows, labels = self._context_rows(ctx)
            tokens = [self._encode_cells(self.reference[rows[s:s + 8192]]).double().flatten(1)
                      .numpy() for s in range(0, len(rows), 8192)]
            tokens = np.concatenate(tokens) if tokens else np.zeros((0, 0))
            cache[ctx] = {lab: group_moments(tokens[labels == lab]) for lab in np.unique(labels)}
        return cache[ctx]

    def _context_rows(self, ctx: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the stored reference cells in context ``ctx`` and their canonical labels."""
        obs = self.reference.obs
        mask = np.ones(len(obs), dtype=bool)
        for k, v in zip(self.covariates.keys, ctx, strict=True):
            mask &= obs[k].astype(str).to_numpy() == v
        rows = np.flatnonzero(mask)
        return rows, obs[self.condition_key].astype(str).map(self._canonical).to_numpy()[rows]

    def _unmodelled(self) -> np.ndarray:
        """Column indices of the genes outside the model (carried over from reference cells)."""
        return np.setdiff1d(np.arange(len(self.var_names)), np.asarray(self.gene_index))

    def _log1p_columns(self, cells: ad.AnnData, cols: np.ndarray | None = None):
        """log1p expression of the columns ``cols`` of ``cells`` (default: the unmodelled
        genes), sparse if ``cells.X`` is (counts normalised by each cell's whole library)."""
        X = cells.X[:, self._unmodelled() if cols is None else cols]
        if self.representation == "counts":
            X = counts_to_log1p(X, lib=cells.obs[LIBRARY_KEY].to_numpy())
        return X

    def _log1p_unmodelled(self, cells: ad.AnnData) -> np.ndarray:
        """Dense log1p expression ``(n, U)`` of the unmodelled genes of ``cells``."""
        X = self._log1p_columns(cells)
        return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)

    def _log1p_mean(self, cells: ad.AnnData) -> np.ndarray:
        """Mean log1p ``(U,)`` of the unmodelled genes of ``cells``, without densifying."""
        X = self._log1p_columns(cells)
        return np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / max(X.shape[0], 1)

    def _gene_mean(self, label: str, ctx: tuple[str, ...]) -> np.ndarray | None:
        """Mean log1p ``(U,)`` of the unmodelled genes over the stored reference cells of
        ``label`` in context ``ctx`` (``None`` if there are none); cached per label, so that
        only the groups an anchor needs are ever read."""
        cache = self.__dict__.setdefault("_anchor_cache", {})
        key = ("gene_mean", self._canonical(label), ctx)
        if key not in cache:
            rows, labels = self._context_rows(ctx)
            rows = rows[labels == self._canonical(label)]
            cache[key] = self._log1p_mean(self.reference[rows]) if len(rows) else None
        return cache[key]

    def _gene_target(self, label: str, ctx: tuple[str, ...], terms: list,
                     carried: np.ndarray) -> np.ndarray | None:
        """Anchor mean ``(U,)`` of the unmodelled genes in ``ctx``, mirroring the token anchor
        ``terms``: weighted training means, or for a held-out context the same estimator
        (weights, slope) applied to the genes. ``carried`` is the mean of the cells' own values
        (the context's control mean when the token anchor used the source cells')."""
        if not self._estimated(terms):
            means = [self._gene_mean(lab, ctx) for lab, _ in terms]
            if any(m is None for m in means):
                return None
            return sum(w * m for m, (_, w) in zip(means, terms, strict=True))
        info = self.__dict__.get("_anchor_cache", {}).get(
            ("context_info", self._canonical(label), ctx))
        if info is None:
            return None
        own = self._gene_mean(self.vocab.control, ctx)
        c = carried if info["c_from_source"] or own is None else own
        c = info.get("c_genes", c)
        if "gene_effect" in info:  # projected with the modelled genes (_project_estimate)
            return c + info["gene_effect"]
        pool = self._context_pool(label, ctx)
        ctrl = self.vocab.control
        C = np.stack([self._gene_mean(ctrl, k) for k in pool])
        E = np.stack([self._gene_mean(label, k) for k in pool]) - C
        return c + apply_effect(info, E, C, c)

    def _estimator_report(self, label: str, terms: dict | None) -> dict[str, dict]:
        """For ``uns["scdit"]["context_estimator"]``: per held-out context anchored in
        ``terms``, the estimator chosen, its parameter and leave-one-context-out Pearson (and
        the mean shift's), keyed ``"label | context"``."""
        out = {}
        for ctx, ts in (terms or {}).items():
            if not self._estimated(ts):
                continue
            info = self.__dict__.get("_anchor_cache", {}).get(
                ("context_info", self._canonical(label), ctx), {})
            key = f"{label} | {', '.join(ctx)}"
            out[key] = {"method": info.get("method", "mean"),
                        "param": float("nan") if info.get("param") is None else info["param"],
                        "loco_pearson": float("nan") if info.get("loco") is None else info["loco"],
                        "loco_pearson_mean_shift": float("nan") if info.get("loco_mean") is None
                        else info["loco_mean"],
                        "n_contexts": int(len(info.get("weights", []))),
                        "effect_rank": int(info.get("effect_rank", 0))}
        return out

    def _anchor_unmodelled(self, label: str, part: ad.AnnData, ref: ad.AnnData, terms: dict,
                           representation: str, rng) -> ad.AnnData:
        """Give the genes outside the model (carried over from ``ref``) the anchored mean of
        each context, as the modelled genes have: one shift per gene and context, solved so
        that the mean after clipping at 0 is the target (counts: on the log1p scale of each
        cell's library, then rounded as the modelled genes are)."""
        cols = self._unmodelled()
        if not terms or not len(cols):
            return part
        lib = ref.obs[LIBRARY_KEY].to_numpy() if self.representation == "counts" else None
        X = self._log1p_unmodelled(ref)
        cov_df = ref.obs[list(self.covariates.keys)] if self.covariates.keys else None
        ctx_of = self._context_keys(cov_df, len(X))
        changed = False
        for ctx, ts in terms.items():
            rows = np.array([i for i, c in enumerate(ctx_of) if c == ctx])
            target = self._gene_target(label, ctx, ts, X[rows].mean(0)) if len(rows) else None
            if target is None:
                continue
            X[rows] = np.maximum(X[rows] + clipped_mean_shift(X[rows], target), 0.0)
            changed = True
        if not changed:
            return part
        if representation == "counts":
            X = log1p_to_counts(X, lib, rng=rng)
        out = part.X.toarray() if sp.issparse(part.X) else np.array(part.X)
        out[:, cols] = X.astype(out.dtype)
        part.X = sp.csr_matrix(out) if sp.issparse(part.X) else out
        return part

    def _anchor_mean(self, label: str, ctx: tuple[str, ...]) -> torch.Tensor | None:
        """Mean token ``(T, P)`` of the stored training cells of ``label`` in context ``ctx``
        (``None`` if there are none)."""
        stats = self._anchor_stats(ctx).get(self._canonical(label))
        if stats is None:
            return None
        return torch.as_tensor(stats[0]).reshape(self.tokenizer.n_tokens, self.tokenizer.patch_size)

    def _anchor_scale(self) -> np.ndarray:
        """Per token coordinate, its unit in the tokenizer's unstandardised features (log1p
        expression for the genes tokenizer, PC scores or the scVI latent), 1 for padding.

        Shrinkage works in these units: its eigenvalue clipping is not invariant to rescaling,
        and on the Norman doubles standardised units (where noisy low-expressed genes weigh as
        much as the rest) gave Pearson Δ 0.884 against 0.908 in log1p units (27 of 30
        bootstrap resamples agree; benchmarks/RESULTS.md).
        """
        scale = np.ones(self.tokenizer.n_tokens * self.tokenizer.patch_size)
        std = getattr(self.tokenizer, "std", None)
        if std is not None and len(std):
            scale[:len(std)] = np.asarray(std, dtype=np.float64)
        return scale

    def _anchor_prior(self, ctx: tuple[str, ...]) -> tuple[np.ndarray, int] | None:
        """Empirical-Bayes prior covariance of effects in ``ctx`` (in the units of
        :meth:`_anchor_scale`) and the number of effects it was estimated from (labels with at
        least two training cells), or ``None`` (fewer than two, or control has fewer than two
        cells); cached."""
        cache = self.__dict__.setdefault("_anchor_cache", {})
        key = ("prior", ctx)
        if key not in cache:
            stats = self._anchor_stats(ctx)
            ctrl = stats.get(self._canonical(self.vocab.control))
            pairs = [v for lab, v in stats.items() if lab != self._canonical(self.vocab.control)
                     and v[1] is not None]
            cache[key] = None
            if ctrl is not None and ctrl[1] is not None and len(pairs) >= 2:
                s = self._anchor_scale()
                effects = np.stack([(m - ctrl[0]) * s for m, _ in pairs])
                noise = np.stack([(se2 + ctrl[1]) * s**2 for _, se2 in pairs])
                cache[key] = (effect_prior(effects, noise), len(pairs))
        return cache[key]

    def _shrink_contexts(self, terms: dict, shrink: bool | None) -> set:
        """The contexts of ``terms`` whose anchors use shrunk effects (see ``predict``)."""
        if shrink is False:
            return set()
        if shrink is None and self.tokenizer.n_tokens * self.tokenizer.patch_size > MAX_DIM:
            return set()  # the dense prior would be too slow; shrink=True forces it
        out = set()
        for ctx, ts in terms.items():
            if self._estimated(ts):
                continue  # a held-out context's estimated target (no own training effects)
            prior = self._anchor_prior(ctx)
            if prior is not None and (shrink or prior[1] >= MIN_EFFECTS):
                out.add(ctx)
            elif shrink:
                where = f" in context {dict(zip(self.covariates.keys, ctx, strict=True))}" if ctx else ""
                raise ValueError(
                    f"shrink=True needs at least two perturbations with two or more training "
                    f"cells, and control cells,{where} to estimate the prior; use shrink=None.")
        return out

    def _anchor_target(self, label: str, ctx: tuple[str, ...], shrink: bool) -> torch.Tensor:
        """Anchor mean ``(T, P)`` of ``label`` in ``ctx``: its training mean, or with ``shrink``
        the control mean plus the empirical-Bayes posterior of its training effect."""
        mean = self._anchor_mean(label, ctx)
        stats = self._anchor_stats(ctx)
        lab, ctrl = self._canonical(label), self._canonical(self.vocab.control)
        if not shrink or lab == ctrl or stats[lab][1] is None:
            return mean
        cache = self.__dict__.setdefault("_anchor_cache", {})
        key = ("posterior", lab, ctx)
        if key not in cache:
            (m, se2), (c, c_se2) = stats[lab], stats[ctrl]
            s = self._anchor_scale()
            post = posterior_effect((m - c) * s, (se2 + c_se2) * s**2, self._anchor_prior(ctx)[0])
            cache[key] = torch.as_tensor(c + post / s).reshape(mean.shape)
        return cache[key]

    def _anchor_shift(self, terms: dict, gens: dict[str, torch.Tensor],
                      cov_df: pd.DataFrame | None, shrunk: set = frozenset(),
                      own: str | None = None, label: str | None = None) -> torch.Tensor:
        """Per-cell shift ``(n, T, P)``: in each context, sum over terms of weight × (anchor
        target − generated mean of that term from the same starting points). With ``own``
        (a label of ``gens``), every term's generated mean is that label's: the weights sum to
        one, so the shift is simply (combined target − own generated mean), no interaction. A
        term may be a target tensor instead of a label (held-out context); its generated mean
        is that of ``label``."""
        n = len(next(iter(gens.values())))
        ctx_of = self._context_keys(cov_df, n)
        shift = torch.zeros_like(gens[next(iter(gens))], dtype=torch.float64)
        for ctx, ts in terms.items():
            rows = torch.as_tensor([i for i, c in enumerate(ctx_of) if c == ctx])
            delta = sum(w * ((self._anchor_target(lab, ctx, ctx in shrunk)
                              if isinstance(lab, str) else lab.double())
                             - gens[own or (lab if isinstance(lab, str) else label)][rows]
                             .double().mean(0)) for lab, w in ts)
            shift[rows] = delta
        return shift.float()

    def _match_decoded_means(self, x0: torch.Tensor, terms: dict,
                             cov_df: pd.DataFrame | None) -> torch.Tensor:
        """Where the tokenizer clips its output (log1p ≥ 0), shift each anchored context's
        tokens per coordinate so that the *decoded* mean equals the anchored one."""
        match = getattr(self.tokenizer, "match_decoded_mean", None)
        if match is None:
            return x0
        ctx_of = self._context_keys(cov_df, len(x0))
        x0 = x0.clone()
        for ctx in terms:
            rows = torch.as_tensor([i for i, c in enumerate(ctx_of) if c == ctx])
            x0[rows] = match(x0[rows])
        return x0

    def _velocity(self, label: str, atoms: torch.Tensor, covs: torch.Tensor, scale: float,
                  compose: float | None, dose: torch.Tensor | None = None):
        """Guided velocity for ``label``; combinations optionally composed from their members."""
        w = self._compose_weight(label, compose)

        def cond(a, d):
            c = {"atoms": a, "covariates": covs}
            if d is not None:
                c["dose"] = d
            return c

        v_joint = guided(self.field, cond(atoms, dose), scale)
        members = self.vocab.members(label)
        if w == 0.0 or len(members) < 2:
            return v_joint
        terms = [] if w == 1.0 else [(v_joint, 1.0 - w)]
        for j, m in enumerate(members):  # members are sorted, as the columns of atoms and dose
            a = torch.as_tensor(self.vocab.encode([m] * len(atoms)), device=atoms.device)
            d = None if dose is None else dose[:, j:j + 1]
            terms.append((guided(self.field, cond(a, d), scale), w))
        ctrl = torch.zeros_like(atoms[:, :1])
        terms.append((guided(self.field, cond(ctrl, None), scale), -w * (len(members) - 1)))
        return composed(terms)

    def _context_fallback(self) -> bool:
        """Whether unseen (perturbation, context) pairs drop their covariates (control source
        trained with covariate dropout)."""
        c = self.config
        return c.flow.source == "control" and bool(c.conditions.covariate_dropout)

    def _seen_in_context(self, label: str, cov_df: pd.DataFrame) -> np.ndarray:
        """Per row of ``cov_df``: was ``label`` seen in training in that covariate context?"""
        keys = list(self.covariates.keys)
        if not hasattr(self, "_seen_pairs"):
            obs = self.reference.obs
            canon = obs[self.condition_key].astype(str).map(self._canonical)
            ctx = obs[keys].astype(str).agg("\x1f".join, axis=1)
            self._seen_pairs = set(zip(canon, ctx, strict=True))
        c = self._canonical(label)
        ctx = cov_df[keys].astype(str).agg("\x1f".join, axis=1)
        return np.array([(c, x) in self._seen_pairs for x in ctx], dtype=bool)

    def _dose_tensor(self, label: str, dose, n: int, width: int) -> torch.Tensor | None:
        key = self.config.data.dose_key
        if key is None:
            if dose is not None:
                raise ValueError("This model was trained without dose_key; do not pass dose.")
            return None
        if dose is None:
            if label == self.vocab.control:
                dose = 0.0
            else:
                raise ValueError(f"This model was trained with doses (obs[{key!r}]); pass dose= "
                                 "(a number, or 'a+b' for the members of a combination).")
        arr = parse_doses([label], [dose], self.vocab, width, key)
        return torch.as_tensor(np.repeat(arr, n, axis=0))

    def _encode_cells(self, ref: ad.AnnData) -> torch.Tensor:
        """Tokens ``(n, T, P)`` of cells in the training genes and representation."""
        X = ref.X
        X_log = to_log1p(X, self.representation)
        counts = X if self.representation == "counts" else None
        model_in = self.tokenizer.prepare(X_log, counts=counts, obs=ref.obs)
        dense = model_in.toarray() if sp.issparse(model_in) else np.asarray(model_in)
        return self.tokenizer.encode(torch.as_tensor(np.asarray(dense, dtype=np.float32)))

    def _control_cells(self, label: str, n: int, covariates, rng) -> ad.AnnData:
        """Stored control cells to transport: of the given context, else of the contexts the
        perturbation was seen in, else any."""
        obs = self.reference.obs
        key = self.condition_key
        ctrl = obs[key].to_numpy() == self.vocab.control
        mask = ctrl.copy()
        if covariates:
            for k, v in dict(covariates).items():
                if k not in self.covariates.keys:
                    raise KeyError(f"Unknown covariate key {k!r}; the model was trained with "
                                   f"{list(self.covariates.keys)}.")
                mask &= obs[k].astype(str).to_numpy() == str(v)
            if not mask.any():
                raise ValueError(f"No stored control cells for covariates {dict(covariates)}; "
                                 "pass source=control cells of that context.")
        elif self.covariates.keys:
            seen = obs[key].map(self._canonical).to_numpy() == self._canonical(label)
            if seen.any():
                keys = list(self.covariates.keys)
                ctx_seen = set(map(tuple, obs.loc[seen, keys].astype(str).to_numpy()))
                in_ctx = np.array([tuple(r) in ctx_seen for r in obs[keys].astype(str).to_numpy()])
                if (mask & in_ctx).any():
                    mask &= in_ctx
        pool = np.flatnonzero(mask)
        return _take(self.reference, rng.choice(pool, n, replace=True),
                     dict(covariates) if covariates else None)

    def _compose_weight(self, label: str, compose: float | None) -> float:
        if compose is not None:
            return float(compose)
        canonical = {self._canonical(c) for c in self.vocab.conditions}
        return 0.0 if self._canonical(label) in canonical else self.config.flow.compose

    def predict(self, perturbations: str | Sequence[str], n_cells: int | None = None, *,
                covariates: Mapping[str, str] | None = None, source: ad.AnnData | None = None,
                dose: float | str | None = None,
                guidance_scale: float = 1.0, steps: int | None = None, solver: str | None = None,
                seed: int | None = None, layer: str | None = None,
                compose: float | None = None, device: str | None = None,
                target_prior: bool = True, representation: str | None = None,
                calibrate: str | None = None, anchor: bool | str | None = None,
                shrink: bool | None = None) -> ad.AnnData:
        """Generate cells under each perturbation, in the training genes and representation.

        Parameters
        ----------
        perturbations
            A label or list of labels (combinations as ``"A+B"``, any order).
        n_cells
            Cells per perturbation. Default 100, or the number of ``source`` cells (a larger
            value uses every source cell ``n_cells // n_source`` times and draws the remainder
            without replacement; a smaller one draws a subset). An anchored prediction's target
            uses the control mean of all the given source cells, whatever ``n_cells``.
        covariates
            One value per covariate key (e.g. ``{"cell_type": "k562"}``). Default: read from
            ``source`` cells, else drawn with the reference cells of that perturbation.
        source
            Cells whose context to predict (e.g. control cells of one cell type): their
            covariates, library sizes and unmodelled genes are carried over. Must have the
            training genes and representation. A model fitted with ``source="control"``
            transports these very cells (cell ``i`` of the output is source cell ``i`` under the
            perturbation); without ``source`` it transports stored control cells of the context
            (``covariates``), or of the contexts the perturbation was seen in.
        dose
            Dose of the perturbation(s) for models fitted with ``dose_key`` (a number, or
            ``"a+b"`` for the members of a combination).
        guidance_scale
            Classifier-free guidance scale; 1 is the plain conditional model.
        steps, solver
            ODE integration (defaults from the model's :class:`~scdit._config.FlowConfig`).
        seed
            Seed for reproducible output; ``None`` draws a fresh one.
        layer
            Layer of ``source`` holding expression (default ``.X``).
        compose
            For combinations ``A+B``: weight ``w`` of composing the members' velocity fields,
            ``v = (1 - w) v_AB + w (v_A + v_B - v_control)`` (score composition). 0 uses the
            learned joint condition only. Default (``None``): 0 for combinations seen in
            training, ``FlowConfig.compose`` (1.0) for unseen ones; on held-out Norman doubles
            composition raised Pearson Δ from 0.83 (joint only) to 0.90 (benchmarks/RESULTS.md).
        device
            Where to integrate (default: CUDA if available, else CPU).
        target_prior
            For perturbations never seen in training whose name is a measured gene (genetic
            perturbations known through features): scale that target gene's expression by the
            typical change of targeted genes in training (``summary["target_prior"]``: the
            median over seen single perturbations of measured genes of the ratio of the target's
            mean expression to control; e.g. ~0.3 for CRISPRi knock-down; not applied when the
            quartiles of those ratios disagree in direction). The model's features
            place the perturbation's downstream response; this sets the direct on-target
            change, which a model cannot infer for a gene it never saw targeted.

        representation
            ``None`` (default): the training representation. ``"log1p"``: log1p(normalize_total
            1e4) expression as the model generates it, also for a model trained on counts. For a
            counts model the default converts each generated cell to counts with its source
            (reference) cell's library size, which re-adds sampling noise at the *source*
            cell's depth; where a perturbation changes sequencing depth (e.g. held-out
            glioblastoma patients PW036/PW040) the log1p output is the closer prediction of
            the normalised expression (benchmarks/RESULTS.md).
        calibrate
            Control-source models only: subtract the model's *drift*, i.e. where it moves the
            same starting cells (same noise) under the control condition. ``"mean"``: the mean
            drift of each covariate context; ``"cell"``: each cell's own drift (the output is the
            source cell plus the difference between the perturbed and control transports).
            ``None`` (default): no correction. Costs one more ODE solve.
        anchor
            Anchor the generated cells to the training data: in each covariate context every
            generated cell is shifted by one constant per coordinate so that the mean of the
            output (log1p, after clipping at 0) is the training estimate; the model supplies
            the spread around it. A perturbation seen in that context gets its training mean;
            an unseen combination ``A+B`` gets the additive estimate ``control + d_A + d_B``
            from the training effects of its members (shrunk, see ``shrink``). Needs training
            cells of every member and of control in the context. A perturbation never seen in
            the context (a held-out cell type or patient) gets the context's control mean (its
            ``source`` cells', else its stored control cells') plus the effect estimated from
            the other contexts where it was seen: the mean shift, a kernel average over
            contexts with similar control cells, or a slope on the control mean, whichever
            predicts the training contexts' own effects best when each is left out in turn
            (``scdit._context``; needs ≥ 3 such contexts for the default, 2 give the mean
            shift). Genes outside the model (carried over from the reference cells) are
            anchored alike, one shift per gene and context; with the genes tokenizer the
            estimated effect over all genes is first projected onto the top 50 principal axes
            of the training cells' log1p expression (:meth:`_effect_basis`), which removes
            per-gene noise of the estimate. ``None`` (default): on for
            combinations not seen in training whose members and control all have training cells
            in the context, and for held-out contexts (the perturbation seen in ≥ 3 other
            contexts with control cells), off otherwise; ``True`` requires it (error if
            impossible);
            ``False`` is the plain model. ``"interaction"``: as ``True`` plus the interaction
            the model generates for an unseen combination (its ``A+B`` minus its own ``A``,
            ``B`` and control, integrated from the same starting points; one more ODE solve
            per member and control); measured harmful on the Norman doubles (Pearson Δ 0.905 /
            0.894 with it vs 0.910 / 0.898 without, two fits), hence not the default.
            Training means are those of the stored reference cells (up to 300 per group).
            On held-out Norman doubles (six fits, benchmarks/RESULTS.md) the default gives
            Pearson Δ 0.909, top-20-DE Pearson Δ 0.959, energy distance 0.058 ± 0.001 (plain
            model 0.844 ± 0.041 / 0.900 / 0.079; additive 0.870 / 0.931 / 0.084).
            On Kang 2018 with CD4 T cells held out (all 6,998 genes, 2,000 modelled; three
            fits) the default gives Pearson Δ 0.907 ± 0.001 and energy distance 0.201, the
            plain model 0.752 / 0.402, the mean shift 0.816 / 0.403, CellFlow (three seeds)
            0.901 / 0.359.
        shrink
            Anchor to *denoised* training effects: each anchoring perturbation's training
            effect (mean minus control mean) is replaced by its empirical-Bayes posterior mean
            under a Gaussian prior whose covariance is estimated from the training effects of
            all perturbations of the context (``scdit._shrinkage``; in log1p units for the
            genes tokenizer), which shrinks what few cells cannot tell from noise towards the
            directions that perturbations in this context actually move. ``None`` (default): on
            for anchored contexts with at least 10 perturbations with two or more training
            cells (below that the prior is too poorly estimated to help) when the token space
            has at most 5,000 coordinates (the prior is a dense eigendecomposition: ~1 s for
            2,000 genes, ~17 s for 5,000, cubic beyond); ``True``: on wherever
            at least two are available (error otherwise); ``False``: raw training means. Only
            used when the prediction is anchored. On the Norman doubles the additive estimate
            alone goes from Pearson Δ 0.870 (raw) to 0.908 (shrunk;
            ``benchmarks/doubles_shrinkage.py``, which also shows the gain vanishing below
            ~10 training perturbations).

        Returns
        -------
        AnnData with ``obs[condition_key]``, the covariates and ``obs["reference_cell"]``;
        ``uns["scdit"]`` holds the sampling settings and, for held-out contexts anchored to an
        estimated effect, ``"context_estimator"`` (per ``"label | context"``: the estimator
        chosen, its parameter, its leave-one-context-out Pearson and the mean shift's).
        """
        out_rep = self.representation if representation is None else representation
        if out_rep not in ("log1p", "counts"):
            raise ValueError(f"representation must be None, 'log1p' or 'counts', got {representation!r}.")
        if out_rep == "counts" and self.representation != "counts":
            raise ValueError("representation='counts' needs a model trained on counts; this one was "
                             "trained on log1p data (use representation=None or 'log1p').")
        labels = [perturbations] if isinstance(perturbations, str) else list(perturbations)
        if not labels:
            raise ValueError("perturbations is empty; pass at least one perturbation label.")
        self.vocab.encode(labels)  # clear error for unknown perturbations, before any work
        rng = np.random.default_rng(seed)
        src = self._check_source(source, layer) if source is not None else None
        parts, chosen = [], {}
        for i, label in enumerate(labels):
            transport = self.config.flow.source == "control"
            if transport and src is None:
                ref = self._control_cells(label, 100 if n_cells is None else _n_cells(n_cells),
                                          covariates, rng)
            else:
                ref = self._reference_cells(label, src, n_cells, covariates, rng)
            cov_df = ref.obs[list(self.covariates.keys)] if self.covariates.keys else None
            sub_seed = None if seed is None else int(seed) * 1000003 + i
            tokens = self.sample(label, ref.n_obs, covariates=cov_df, dose=dose, output="tokens",
                                  guidance_scale=guidance_scale,
                                  steps=steps, solver=solver, compose=compose, device=device,
                                  seed=sub_seed if sub_seed is not None else int(rng.integers(2**31)),
                                  source_tokens=self._encode_cells(ref) if transport else None,
                                  calibrate=calibrate, anchor=anchor, shrink=shrink,
                                  _anchor_out=(anchored := {}),
                                  _source_cells=(ref if src is None else _take(
                                      src, np.arange(src.n_obs), covariates))
                                  if transport and anchor is not False else None)
            part = self._assemble(label, tokens, ref, rng, out_rep)
            part = self._anchor_unmodelled(label, part, ref, anchored.get("terms"), out_rep, rng)
            chosen.update(self._estimator_report(label, anchored.get("terms")))
            parts.append(self._apply_target_prior(label, part, rng, out_rep) if target_prior
                         else part)
        out = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
        out.obs_names_make_unique()
        out.uns["scdit"] = {"guidance_scale": guidance_scale, "steps": steps or self.config.flow.steps,
                            "solver": solver or self.config.flow.solver, "seed": seed,
                            "compose": "auto" if compose is None else compose,
                            "representation": out_rep, "calibrate": calibrate,
                            "anchor": "auto" if anchor is None else anchor,
                            "shrink": "auto" if shrink is None else shrink}
        if chosen:
            out.uns["scdit"]["context_estimator"] = chosen
        return out

    # ------------------------------------------------------------------ helpers
    def _apply_target_prior(self, label: str, part: ad.AnnData, rng,
                            representation: str | None = None) -> ad.AnnData:
        """Scale the target genes of unseen (feature-only) members by the training prior."""
        prior = self.summary.get("target_prior") or {}
        if not prior or prior.get("n", 0) < 2:
            return part
        if np.sign(prior.get("q25", 0.0)) != np.sign(prior.get("q75", 0.0)):
            return part  # targets go both ways in training (mixed CRISPRa/i): no single prior
        targets = [m for m in self.vocab.members(label)
                   if m in set(self.vocab.featured) and m in self.var_names]
        if not targets:
            return part
        ratio = float(np.exp(prior["log_ratio"]))
        sparse = sp.issparse(part.X)
        X = part.X.toarray() if sparse else np.array(part.X)
        for g in targets:
            j = int(self.var_names.get_loc(g))
            col = X[:, j]
            if (representation or self.representation) == "counts":
                if ratio <= 1:
                    new = rng.binomial(np.round(col).astype(np.int64), ratio)
                else:
                    new = np.round(col) + rng.poisson(np.round(col) * (ratio - 1))
            else:
                new = np.log1p(np.expm1(col) * ratio)
            X[:, j] = new
        part.X = sp.csr_matrix(X) if sparse else X
        return part


    def _covariate_frame(self, covariates, n: int) -> pd.DataFrame:
        keys = list(self.covariates.keys)
        if isinstance(covariates, pd.DataFrame):
            missing = [k for k in keys if k not in covariates]
            if missing:
                raise KeyError(f"covariates lacks column(s) {missing}; the model was trained with {keys}.")
            return covariates.reset_index(drop=True)
        covariates = dict(covariates or {})
        missing = [k for k in keys if k not in covariates]
        if missing:
            raise KeyError(f"Pass a value for covariate(s) {missing} (trained with {keys}).")
        return pd.DataFrame({k: [str(covariates[k])] * n for k in keys})

    def _check_source(self, source: ad.AnnData, layer: str | None) -> ad.AnnData:
        if source.n_obs == 0:
            raise ValueError("source has no cells.")
        missing = self.var_names.difference(source.var_names)
        extra = source.var_names.difference(self.var_names)
        if len(missing):
            raise ValueError(
                f"source has different genes: {len(missing)} training gene(s) are missing (e.g. "
                f"{list(missing[:5])}) and {len(extra)} are extra. Subset/reorder source to the "
                "training genes: source[:, model.var_names]."
            )
        X = get_matrix(source, layer)
        rep = detect_representation(X)
        if rep != self.representation:
            raise ValueError(
                f"source holds {rep} but the model was trained on {self.representation}; pass "
                f"source in the training representation (layer=...)."
            )
        keys = [k for k in self.covariates.keys if k not in source.obs]
        if keys:
            raise KeyError(f"source.obs lacks covariate column(s) {keys} used in training.")
        obs = source.obs[list(self.covariates.keys)].astype(str).copy()
        self.covariates.encode(obs)  # unknown covariate values → clear error
        X = X[:, source.var_names.get_indexer(self.var_names)]
        ref = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs,
                         var=pd.DataFrame(index=self.var_names))
        if self.representation == "counts":
            ref.obs[LIBRARY_KEY] = library_size(X)
        return ref

    def _reference_cells(self, label: str, src, n_cells, covariates, rng) -> ad.AnnData:
        if covariates:
            unknown = sorted(set(covariates) - set(self.covariates.keys))
            if unknown:
                raise KeyError(f"Unknown covariate key(s) {unknown}; the model was trained with "
                               f"{list(self.covariates.keys)} as covariate keys.")
        if src is not None:
            n = src.n_obs if n_cells is None else _n_cells(n_cells)
            m = src.n_obs  # every source cell n // m times, the remainder drawn without replacement
            rows = np.arange(n) if n == m else np.sort(np.concatenate(
                [np.tile(np.arange(m), n // m), rng.choice(m, n % m, replace=False)]))
            return _take(src, rows, covariates)
        n = 100 if n_cells is None else _n_cells(n_cells)
        obs = self.reference.obs
        key = self.condition_key
        canonical = self._canonical(label)
        pool = np.flatnonzero(obs[key].map(self._canonical).to_numpy() == canonical)
        if len(pool) == 0:
            pool = np.flatnonzero(obs[key].to_numpy() == self.vocab.control)
        if covariates:
            self._covariate_frame(covariates, 1)
            self.covariates.encode(pd.DataFrame({k: [str(v)] for k, v in covariates.items()}))
            mask = np.ones(len(pool), bool)
            for k, v in covariates.items():
                mask &= obs[k].astype(str).to_numpy()[pool] == str(v)
            if mask.any():
                pool = pool[mask]
            else:  # context never seen with this perturbation: use its control cells
                ctrl = obs[key].to_numpy() == self.vocab.control
                for k, v in covariates.items():
                    ctrl &= obs[k].astype(str).to_numpy() == str(v)
                pool = np.flatnonzero(ctrl) if ctrl.any() else pool
        return _take(self.reference, rng.choice(pool, n, replace=True), covariates)

    def _canonical(self, label: str) -> str:
        return self.vocab.separator.join(self.vocab.members(str(label))) or self.vocab.control

    def _assemble(self, label: str, tokens: np.ndarray, ref: ad.AnnData, rng,
                  representation: str | None = None) -> ad.AnnData:
        """Decode generated ``tokens`` ``(n, T, P)`` into copies of the reference cells ``ref``.

        Counts come from the tokenizer's ``decode_counts`` (scVI: sampled from its likelihood
        with the reference cell's library size of the modelled genes) when it has one, else
        from the decoded log1p with the reference cell's library size. ``representation="log1p"``
        for a counts model returns the decoded log1p instead (unmodelled genes: the reference
        cells' own, normalised).
        """
        X = ref.X.toarray() if sp.issparse(ref.X) else np.array(ref.X, dtype=np.float32)
        X = X.astype(np.float32)
        tok = self.tokenizer
        z = torch.as_tensor(np.asarray(tokens, dtype=np.float32))  # (n, T, P)
        if self.representation == "counts" and representation == "log1p":
            X = np.asarray(to_log1p(X, "counts"), dtype=np.float32)
            X[:, self.gene_index] = tok.decode(z, obs=ref.obs).numpy()
        elif self.representation == "counts" and hasattr(tok, "decode_counts"):
            lib = X[:, self.gene_index].sum(1)  # (n,) reference library of the modelled genes
            X[:, self.gene_index] = tok.decode_counts(z, lib, obs=ref.obs, generator=rng).numpy()
        elif self.representation == "counts":
            lib = ref.obs[LIBRARY_KEY].to_numpy()
            gen_log = tok.decode(z, obs=ref.obs).numpy()
            X[:, self.gene_index] = log1p_to_counts(gen_log, lib, rng=rng)
        else:
            X[:, self.gene_index] = tok.decode(z, obs=ref.obs).numpy()
        obs = pd.DataFrame({self.condition_key: label}, index=[f"{label}-{i}" for i in range(len(X))])
        for k in self.covariates.keys:
            obs[k] = ref.obs[k].astype(str).to_numpy()
        obs["reference_cell"] = ref.obs["reference_cell"].to_numpy()
        return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=self.var_names))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``reference.h5ad`` into ``path``."""
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True.")
        path.mkdir(parents=True, exist_ok=True)
        tok_meta, tok_arrays = self.tokenizer.state()
        meta = {"format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                "vocab": self.vocab.to_dict(), "covariates": self.covariates.to_dict(),
                "tokenizer": tok_meta, "var_names": list(map(str, self.var_names)),
                "summary": self.summary}
        (path / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        tensors = {f"field.{k}": v.detach().cpu().contiguous() for k, v in self.field.state_dict().items()}
        tensors.update({f"tokenizer.{k}": torch.as_tensor(v) for k, v in tok_arrays.items()})
        save_file(tensors, str(path / "model.safetensors"))
        self.reference.write_h5ad(path / "reference.h5ad", compression="gzip")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScDiT:
        """Load a model written by :meth:`save`."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"No scdit model in {path} (config.json missing).")
        meta = json.loads((path / "config.json").read_text())
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"Model format {meta['format_version']} is newer than this scdit.")
        cfg = ScDiTConfig.from_dict(meta["config"])
        tensors = load_file(str(path / "model.safetensors"))
        tok = tokenizer_from_state(meta["tokenizer"], {k.split(".", 1)[1]: v.numpy() for k, v
                                                       in tensors.items() if k.startswith("tokenizer.")})
        if hasattr(tok, "gene_idx") and len(tok.gene_idx) != len(tok.genes):  # older models
            tok.gene_idx = pd.Index(meta["var_names"]).get_indexer(list(tok.genes)).astype(np.int64)
        vocab = ConditionVocab.from_dict(meta["vocab"])
        covs = CovariateVocab.from_dict(meta["covariates"])
        field = build_field(cfg, tok, vocab, covs)
        field.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("field.")})
        reference = ad.read_h5ad(path / "reference.h5ad")
        return cls(cfg, vocab, covs, tok, field, meta["var_names"], reference, meta.get("summary"))


def _context_centres(tokens: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """Per cell, the mean source token of its covariate context ``(n, T, P)``.

    Cells with the same covariate codes (a row of ``covs``) form one context; without covariates
    all cells do. Used with ``FlowConfig.center``: the flow runs centred on the source cells'
    own control profile, which is added back to its output.
    """
    if len(tokens) == 0:
        return tokens.clone()
    if covs.shape[1] == 0:
        return tokens.mean(0, keepdim=True).expand_as(tokens)
    _, inv = torch.unique(covs, dim=0, return_inverse=True)
    sums = torch.zeros((int(inv.max()) + 1, *tokens.shape[1:]), dtype=torch.float64)
    sums.index_add_(0, inv, tokens.double())
    counts = torch.bincount(inv).double().view(-1, *([1] * (tokens.dim() - 1)))
    return (sums / counts).float()[inv]


def _n_cells(n_cells) -> int:
    if isinstance(n_cells, bool) or not float(n_cells).is_integer() or int(n_cells) < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}.")
    return int(n_cells)


def _take(adata: ad.AnnData, rows: np.ndarray, covariates: Mapping[str, str] | None) -> ad.AnnData:
    """Rows of ``adata`` (repeats allowed) with unique names; originals in ``reference_cell``."""
    obs = adata.obs.iloc[rows].copy()
    obs["reference_cell"] = adata.obs_names[rows].to_numpy()
    obs.index = [str(i) for i in range(len(rows))]
    for k, v in (covariates or {}).items():
        obs[k] = str(v)
    return ad.AnnData(X=adata.X[rows], obs=obs, var=adata.var.copy())


def make_reference(adata: ad.AnnData, X, cfg: ScDiTConfig, *, max_per_group: int = 300,
                   seed: int = 0) -> ad.AnnData:
    """Up to ``max_per_group`` training cells per (condition × covariates) group, in the training
    representation, with their library sizes (counts), used by :meth:`ScDiT.predict`."""
    keys = [cfg.data.condition_key, *cfg.data.covariate_keys]
    obs = adata.obs[keys].astype(str)
    rng = np.random.default_rng(seed)
    rows = []
    for _, idx in obs.groupby(keys, sort=True, observed=True).indices.items():
        rows.extend(rng.choice(idx, min(len(idx), max_per_group), replace=False))
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    sub = X[rows]
    ref = ad.AnnData(X=sp.csr_matrix(sub, dtype=np.float32), obs=obs.iloc[rows].copy(),
                     var=pd.DataFrame(index=adata.var_names.astype(str)))
    if cfg.data.representation == "counts":
        ref.obs[LIBRARY_KEY] = library_size(sub)
    return ref

