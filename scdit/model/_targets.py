"""Effect targets of a fitted model: the effects layer applied to its tokens and genes.

The model composes its generator with an :class:`~scdit.effects.EffectPlan` explicitly: the
plan, over an effect table of the stored reference cells in token coordinates, gives a target
mean per context; every generated cell of that context is shifted by one constant per token
coordinate so that the generated mean is the target (the generator supplies the spread). Genes
the tokenizer does not model get the same estimator over a second table of their log1p values,
and, where tokens are log1p genes, a held-out context's estimate over all genes is projected
onto the main axes of the training cells' expression (:func:`scdit.effects.project_effect`).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import torch

from ..effects import (
    EFFECT_RANK,
    EffectConfig,
    EffectPlan,
    EffectTable,
    Estimate,
    apply_effect,
    expression_basis,
    project_effect,
)
from ._cells import LIBRARY_KEY, CellRows, CellStore
from ._decoder import GeneDecoder, fit_decoder
from ._unmodelled import UnmodelledAnchor, anchor, decoded_changes

#: Kinds of estimate whose mean :meth:`EffectTargets.shift` imposes by scaling each gene's
#: expression (log1p output) instead of shifting it: the typical perturbation of a stand-in,
#: whose cells are real control cells.
SCALED_KINDS = ("typical",)
#: Most stored cells the expression basis of a held-out context's projection is fitted on.
BASIS_CELLS = 3000
#: Fewest reference cells of a perturbation and of control in a context for
#: :meth:`EffectTargets.depth_factor` to differ from 1.
DEPTH_MIN_CELLS = 10


class EffectTargets:
    """Effect tables and plan of one model, built on first use and kept with the model.

    Parameters
    ----------
    cells
        The model's stored reference cells.
    tokenizer
        The fitted tokenizer (tokens ↔ log1p of the modelled genes).
    encode
        ``AnnData -> (n, T, P)`` tokens of cells in the training representation.
    seen_labels
        Canonical labels of the conditions seen in training.
    match_seen
        See :attr:`match_seen`.
    """

    def __init__(self, cells: CellStore, tokenizer, encode, seen_labels,
                 match_seen: bool = True):
        self.cells = cells
        self.tokenizer = tokenizer
        self.encode = encode
        self.seen_labels = set(seen_labels)
        #: Whether :meth:`match_clipped` keeps the generated mean of seen labels without an
        #: estimate (``False`` for dose models: a requested dose may be one never trained).
        self.match_seen = bool(match_seen)
        self._plan: EffectPlan | None = None
        self._genes: EffectTable | None = None
        self._bases: dict[int, np.ndarray | None] = {}
        self._depth: dict[tuple, tuple[float, int]] | None = None
        self._decoder: list[GeneDecoder | None] = []  # fitted once, on first use
        #: Rank of the expression basis a held-out context's estimate is projected onto.
        self.rank = EFFECT_RANK

    # ------------------------------------------------------------------ tables
    def units(self) -> np.ndarray:
        """Per token coordinate, its unit in the tokenizer's unstandardised features (log1p
        for the genes tokenizer, PC scores or the scVI latent), 1 for padding."""
        tok = self.tokenizer
        units = tok.units()
        if units is None:
            return np.ones(tok.n_tokens * tok.patch_size)
        return np.asarray(units, dtype=np.float64)

    @property
    def plan(self) -> EffectPlan:
        """The effect plan over the token table of the reference cells."""
        if self._plan is None:
            c = self.cells
            ref = c.reference

            def tokens(rows):
                return self.encode(ref[rows]).double().flatten(1).numpy()

            table = EffectTable(tokens, c.canonical_labels(), c.reference_contexts(),
                                c.canonical(c.vocab.control), units=self.units())
            self._plan = EffectPlan(table, self.seen_labels, self.describe)
        return self._plan

    @property
    def genes(self) -> EffectTable:
        """Means of the unmodelled genes' log1p values, label × context."""
        if self._genes is None:
            c = self.cells
            self._genes = EffectTable(lambda rows: c.log1p_columns(c.reference[rows]),
                                      c.canonical_labels(), c.reference_contexts(),
                                      c.canonical(c.vocab.control), with_se=False)
        return self._genes

    def describe(self, ctx: tuple) -> str:
        """The suffix ``" in context {...}"`` for messages (empty without covariates)."""
        keys = self.cells.covariates.keys
        return f" in context {dict(zip(keys, ctx, strict=True))}" if ctx else ""

    def basis(self) -> np.ndarray | None:
        """Top :attr:`rank` principal axes ``(n_vars, k)`` of the log1p expression (all genes)
        of the stored cells, for tokenizers whose coordinates are log1p genes; ``None``
        otherwise or when too small. Computed once per rank."""
        if self.rank not in self._bases:
            tok, basis = self.tokenizer, None
            if tok.expression_coordinates:  # tokens are (standardised) log1p genes
                ref = self.cells.reference
                n = ref.n_obs
                rows = np.arange(n) if n <= BASIS_CELLS else np.sort(
                    np.random.default_rng(0).choice(n, BASIS_CELLS, replace=False))
                X = self.cells.log1p_columns(ref[rows], np.arange(len(self.cells.var_names)))
                basis = expression_basis(X, self.rank)
            self._bases[self.rank] = basis
        return self._bases[self.rank]

    @property
    def scales(self) -> bool:
        """Whether stand-ins' log1p cells can be scaled to their mean: a tokenizer whose
        coordinates decode to log1p genes clipped at 0 (``clips_output``) and that has
        ``scale_decoded_mean_to`` (rank-encoded genes are shifted instead)."""
        return bool(self.tokenizer.clips_output) \
            and callable(getattr(self.tokenizer, "scale_decoded_mean_to", None))

    # ------------------------------------------------------------------ estimates
    def resolve(self, label: str, cov_df: pd.DataFrame | None, config: EffectConfig,
                source_means: dict, source_cells: ad.AnnData | None) -> dict | None:
        """Per requested context, the :class:`~scdit.effects.Estimate` setting the mean of
        ``label`` (``None``: the generator alone; a label the model cannot place gets the
        typical perturbation's mean). ``source_means``: mean source token per
        context; ``source_cells``: the given source cells (their unmodelled genes' control
        mean completes a held-out context's estimate)."""
        c = self.cells
        canon = c.canonical(label)
        if c.vocab.unknown_atoms([label]):  # a stand-in (see scdit.conditions.stand_ins)
            return self.plan.typical(c.contexts(cov_df), config)
        est = self.plan.resolve(canon, tuple(c.vocab.members(label)), c.contexts(cov_df), config,
                                source_means, bool(c.covariates.keys))
        if est is None:
            return None
        for ctx, e in est.items():
            if e.kind == "context":
                est[ctx] = self._complete(canon, ctx, e, source_cells)
        return est

    def _complete(self, label: str, ctx: tuple, est: Estimate,
                  source_cells: ad.AnnData | None) -> Estimate:
        """A held-out context's estimate with the unmodelled genes' part (same weights and
        slope), projected onto the expression basis where there is one."""
        c, info = self.cells, est.info
        if info["c_from_source"] and source_cells is not None and len(c.unmodelled):
            rows = [i for i, k in enumerate(c.context_keys(c.frame(source_cells),
                                                           source_cells.n_obs)) if k == ctx]
            if rows:  # the unmodelled genes' control mean, from the same source cells
                info["c_genes"] = c.log1p_mean(source_cells[rows])
        basis = self.basis()
        if basis is None:
            return est
        n, cols = len(self.tokenizer.genes), c.unmodelled
        delta = np.zeros(len(c.var_names))
        delta[c.modelled] = info["effect"][:n]
        if len(cols):
            Cu, Eu = self._gene_pool(label, info["pool"])
            cu = info.get("c_genes", self.genes.mean(self.genes.control, ctx))
            delta[cols] = apply_effect(info, Eu, Cu, Cu.mean(0) if cu is None else cu)
        delta = project_effect(delta, basis)
        effect = np.array(info["effect"], dtype=np.float64)
        effect[:n] = delta[c.modelled]
        out = self.plan.context.with_effect(est, effect)
        out.info.update(gene_effect=delta[cols], effect_rank=int(basis.shape[1]))
        return out

    def _gene_pool(self, label: str, pool: list) -> tuple[np.ndarray, np.ndarray]:
        """Control means ``C`` and effects ``E`` ``(K, U)`` of the unmodelled genes in ``pool``."""
        g = self.genes
        C = np.stack([g.mean(g.control, k) for k in pool])
        return C, np.stack([g.mean(label, k) for k in pool]) - C

    def _depth_table(self) -> dict[tuple, tuple[float, int]]:
        """``(median library size, cells)`` of the reference cells per ``(canonical label,
        context)``; empty for log1p models. Computed once."""
        if self._depth is None:
            c, self._depth = self.cells, {}
            obs = c.reference.obs
            if LIBRARY_KEY in obs and c.reference.n_obs:
                keys = pd.Series(list(zip(c.canonical_labels(), c.reference_contexts(),
                                          strict=True)))
                codes, uniques = pd.factorize(keys)
                lib = obs[LIBRARY_KEY].to_numpy(dtype=np.float64)
                order = np.argsort(codes, kind="stable")
                bounds = np.flatnonzero(np.diff(codes[order])) + 1
                for idx in np.split(order, bounds):
                    self._depth[uniques[codes[idx[0]]]] = (float(np.median(lib[idx])), len(idx))
        return self._depth

    def depth_factor(self, label: str, ctx: tuple) -> float:
        """How much deeper the reference cells of ``label`` (canonical) are sequenced than the
        control cells of ``ctx``: the ratio of their median library sizes (counts models with
        at least :data:`DEPTH_MIN_CELLS` reference cells of each and positive medians, else 1;
        1 for control).

        A perturbation can change how many UMIs its cells yield (in the glioblastoma slices
        panobinostat multiplies one patient's median depth by more than four): counts
        generated at a control cell's library size would then sit at the wrong depth, and
        their normalised values at the wrong discreteness."""
        table = self._depth_table()
        own = table.get((label, ctx))
        ctrl = table.get((self.cells.canonical(self.cells.vocab.control), ctx))
        if own is None or ctrl is None or min(own[1], ctrl[1]) < DEPTH_MIN_CELLS \
                or own[0] <= 0 or ctrl[0] <= 0:
            return 1.0
        return own[0] / ctrl[0]

    def depth_factors(self, label: str, ref: CellRows, estimates: dict
                      ) -> tuple[np.ndarray | None, dict[str, float]]:
        """Per generated cell (one per row of ``ref``), the factor its reference cell's
        library size is multiplied by: where a seen perturbation's training mean sets the mean
        of its context, :meth:`depth_factor` of the label over that of the reference cell's own
        condition (control cells, and source cells of an unknown condition, count as control:
        their factor is the label's; the label's own stored cells keep their depth); 1
        elsewhere. Returns ``(factors or None where every factor is 1, report)``; the report
        gives per ``"label"`` or ``"label | context"`` the median factor applied, where it is
        not 1 (``uns["scdit"]["depth_factor"]``)."""
        c = self.cells
        canon = c.canonical(label)
        per_ctx = {ctx: self.depth_factor(canon, ctx) for ctx, est in estimates.items()
                   if est.kind == "seen"}
        if all(f == 1.0 for f in per_ctx.values()):
            return None, {}
        ctrl = c.canonical(c.vocab.control)
        if c.key in ref.obs:
            names = {v: c.canonical(v) for v in ref.obs[c.key].astype(str).unique()}
            names = {v: k if k in self.seen_labels else ctrl for v, k in names.items()}
            own = ref.obs[c.key].astype(str).map(names).to_numpy()
        else:
            own = np.full(ref.n_obs, ctrl, dtype=object)
        out, pairs, by_ctx = np.ones(ref.n_obs), {}, {}
        for i, key in enumerate(zip(c.context_keys(c.frame(ref), ref.n_obs), own, strict=True)):
            if key[0] in per_ctx:  # one factor per distinct (context, own condition)
                if key not in pairs:
                    pairs[key] = per_ctx[key[0]] / self.depth_factor(key[1], key[0])
                out[i] = pairs[key]
                by_ctx.setdefault(key[0], []).append(pairs[key])
        report = {f"{label} | {', '.join(ctx)}" if ctx else label: round(float(np.median(f)), 6)
                  for ctx, f in sorted(by_ctx.items()) if np.median(f) != 1.0}
        return (None if np.all(out == 1.0) else out), report

    # ------------------------------------------------------------------ applying them
    def shift(self, estimates: dict, x0: torch.Tensor, cov_df: pd.DataFrame | None,
              label: str | None = None, rows_per_chunk: int = 4096, *,
              scale_stand_ins: bool = True) -> torch.Tensor:
        """Generated tokens ``x0`` ``(n, T, P)`` of ``label`` shifted per context so that their
        mean is the target, then matched on the decoded scale where the tokenizer clips its
        output (also in the contexts without an estimate where ``label`` was seen, see
        :meth:`match_clipped`). With ``scale_stand_ins``, a stand-in's cells (the typical
        perturbation's mean, on control cells) are instead scaled per gene where the tokenizer
        can (``scale_decoded_mean_to``): their zeros stay zeros, where a shift would leave
        small positive values in log1p output (counts output rounds them back to counts
        itself; there ``predict`` shifts). ``x0`` is changed in place (float64 means
        accumulated ``rows_per_chunk`` rows at a time)."""
        c = self.cells
        ctx_of = c.context_keys(cov_df, len(x0))
        shape = x0.shape[1:]
        scale = self.tokenizer.scale_decoded_mean_to if scale_stand_ins and self.scales else None
        scaled = {ctx for ctx, est in estimates.items()
                  if est.kind in SCALED_KINDS and scale is not None}
        for ctx, est in estimates.items():
            rows = torch.as_tensor([i for i, k in enumerate(ctx_of) if k == ctx],
                                   dtype=torch.long)
            if not len(rows):
                continue
            total = torch.zeros(shape, dtype=torch.float64)
            for s in range(0, len(rows), rows_per_chunk):
                total += x0[rows[s:s + rows_per_chunk]].double().sum(0)
            gen_mean = total / len(rows)
            goal = torch.as_tensor(est.mean(), dtype=torch.float64).reshape(shape)
            if ctx in scaled:  # a stand-in's real cells
                x0[rows] = scale(x0[rows], goal)
                continue
            shift = (goal - gen_mean).float()
            for s in range(0, len(rows), rows_per_chunk):
                part = rows[s:s + rows_per_chunk]
                x0[part] = x0[part] + shift
        return self.match_clipped(x0, cov_df, label, always=set(estimates) - scaled)

    def seen_here(self, label: str | None, cov_df: pd.DataFrame | None, n: int) -> np.ndarray:
        """Per row ``(n,)``: was ``label`` seen in training in the row's covariate context
        (all ``False`` where :attr:`match_seen` is off)? ``cov_df=None``: in any context."""
        if label is None or not self.match_seen \
                or self.cells.canonical(label) not in self.seen_labels:
            return np.zeros(n, dtype=bool)
        if not self.cells.covariates.keys or cov_df is None:
            return np.ones(n, dtype=bool)
        return self.cells.seen_in_context(label, cov_df)

    def unseen_here(self, label: str | None, cov_df: pd.DataFrame | None, n: int) -> np.ndarray:
        """Per row ``(n,)``: was ``label`` never seen in training in the row's covariate context
        (an unseen perturbation, or a held-out context; whatever :attr:`match_seen`)?
        ``label=None`` (unconditional) and ``cov_df=None`` (any context) count as seen."""
        if label is None:
            return np.zeros(n, dtype=bool)
        if self.cells.canonical(label) not in self.seen_labels:
            return np.ones(n, dtype=bool)
        if not self.cells.covariates.keys or cov_df is None:
            return np.zeros(n, dtype=bool)
        return ~self.cells.seen_in_context(label, cov_df)

    def match_clipped(self, x0: torch.Tensor, cov_df: pd.DataFrame | None,
                      label: str | None, always=()) -> torch.Tensor:
        """Tokens ``x0`` ``(n, T, P)`` of ``label`` whose decoded mean, per context, is their
        mean before the tokenizer clips log1p at 0 (``tokenizer.match_decoded_mean``;
        unchanged where the tokenizer does not clip), in the contexts of ``always`` (those an
        estimate set) and those where ``label`` was seen in training.

        Clipping raises the mean of every gene whose generated values reach below 0, most for
        genes that a perturbation lowers towards 0, so the decoded cells' mean change would be
        smaller than the one generated: where the generator reproduces a trained condition, it
        keeps its own mean. Elsewhere (unseen labels, held-out contexts) its values below 0
        are extrapolated and are clipped as generated (matching them there was measured to
        help as often as it hurt). ``x0`` is changed in place.
        """
        if not self.tokenizer.clips_output or not len(x0):
            return x0
        ctx_of = self.cells.context_keys(cov_df, len(x0))
        seen = self.seen_here(label, cov_df, len(x0))
        codes, uniques = pd.factorize(pd.Series(ctx_of, dtype=object))
        for j, ctx in enumerate(uniques):
            rows = np.flatnonzero(codes == j)
            if ctx in always or seen[rows].all():
                idx = torch.as_tensor(rows, dtype=torch.long)
                x0[idx] = self.tokenizer.match_decoded_mean(x0[idx])
        return x0

    def gene_target(self, label: str, ctx: tuple, est: Estimate, carried: np.ndarray
                    ) -> np.ndarray | None:
        """Target mean ``(U,)`` of the unmodelled genes in ``ctx`` under ``est``: the same
        weighted labels' means, or a held-out context's estimate. ``carried`` is the mean of
        the cells' own values (the context's control mean when the estimate used the source's)."""
        g = self.genes
        if est.kind != "context":
            if not est.labels:  # a typical effect pooled over other contexts: carried as is
                return None
            means = [g.mean(lab, ctx) for lab, _ in est.labels]
            if any(m is None for m in means):
                return None
            return sum(w * m for m, (_, w) in zip(means, est.labels, strict=True))
        info = est.info
        own = g.mean(g.control, ctx)
        c = carried if info["c_from_source"] or own is None else own
        c = info.get("c_genes", c)
        if "gene_effect" in info:
            return c + info["gene_effect"]
        C, E = self._gene_pool(label, info["pool"])
        return c + apply_effect(info, E, C, c)

    def unmodelled_anchor(self, label: str, ref: CellRows, estimates: dict | None,
                          representation: str, rng: np.random.Generator, *,
                          scale_stand_ins: bool = True) -> UnmodelledAnchor | None:
        """How to give the genes outside the model (carried over from ``ref``) the target mean
        of each context: one shift per gene and context, solved over all the context's cells
        so that the mean after clipping at 0 is the target (counts: on each cell's log1p
        scale, then rounded as the modelled genes, with ``rng``). ``None`` where nothing is
        anchored. The shifts are solved a block of genes at a time (at most
        :data:`ANCHOR_VALUES` values); :meth:`UnmodelledAnchor.apply` applies them per chunk
        of cells. A stand-in's genes are scaled instead, as in :meth:`shift`."""
        if not estimates:
            return None
        canon = self.cells.canonical(label)
        scale = scale_stand_ins and self.scales \
            and all(e.kind in SCALED_KINDS for e in estimates.values())
        return anchor(self.cells, ref, list(estimates), representation, rng, lambda ctx, carried:
                      self.gene_target(canon, ctx, estimates[ctx], carried), scale=scale)

    def decoded_anchor(self, ref: CellRows, tokens: torch.Tensor, representation: str,
                       rng: np.random.Generator) -> UnmodelledAnchor | None:
        """The anchoring of the genes outside the model of cells whose mean the generator sets
        (``tokens`` ``(n, T, P)``, one per reference cell of ``ref``, whose covariates give the
        contexts): in each context, the reference cells' mean moved by the change that the
        generated genes' mean change from the reference cells' (both decoded by the tokenizer)
        implies (:func:`decoded_changes`, with the model's :class:`~scdit.model.GeneDecoder`,
        fitted once on the stored cells), reached as :meth:`unmodelled_anchor` reaches an
        estimate's. ``None`` when the tokenizer models every gene."""
        if not self._decoder:
            self._decoder.append(fit_decoder(self.cells, self.tokenizer, self.encode))
        if self._decoder[0] is None or not len(tokens):
            return None
        change = decoded_changes(self.cells, self.tokenizer, self.encode, self._decoder[0], ref,
                                 tokens)
        return anchor(self.cells, ref, list(change), representation, rng,
                      lambda ctx, carried: carried + change[ctx])

    def report(self, label: str, estimates: dict | None) -> tuple[dict, dict]:
        """``(mean_set_by, context_estimator)`` for ``uns["scdit"]``: per ``"label | context"``
        the estimator that set the mean (``"generator"`` where none did), and for held-out
        contexts the estimator chosen, its parameter and LOCO Pearson (and the mean shift's)."""
        set_by, chosen = {}, {}
        for ctx, est in (estimates or {}).items():
            key = f"{label} | {', '.join(ctx)}" if ctx else label
            if est.kind != "context":
                set_by[key] = est.kind
                continue
            info = est.info
            set_by[key] = f"context:{info.get('method', 'mean')}"
            ckey = f"{label} | {', '.join(ctx)}"
            chosen[ckey] = {
                "method": info.get("method", "mean"),
                "param": float("nan") if info.get("param") is None else info["param"],
                "loco_pearson": float("nan") if info.get("loco") is None else info["loco"],
                "loco_pearson_mean_shift": float("nan") if info.get("loco_mean") is None
                else info["loco_mean"],
                "n_contexts": int(len(info.get("weights", []))),
                "effect_rank": int(info.get("effect_rank", 0))}
        return set_by, chosen
