"""Generated tokens → output cells in the training genes and representation, chunk by chunk.

``predict`` decodes, anchors the unmodelled genes, rescales cells to the normalisation's total
where the generator extrapolates, converts to counts and applies the target prior a chunk of
cells at a time (float32), appending each chunk to an :class:`OutputBuilder`
that assembles the final CSR matrix; its memory beyond the output is bounded by the chunk size.
Every random draw comes from a per-label stream (:class:`~scdit.model._seeds.LabelSeeds`) used
in row order; counts are rounded a chunk at a time (their means matched within each chunk), so
a counts output depends on the chunk size, which follows ``SamplingConfig.batch_size``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data import log1p_to_counts, renormalise_log1p, to_log1p
from ._cells import LIBRARY_KEY, CellRows, CellStore
from ._seeds import ANCHOR, COUNTS, PRIOR, LabelSeeds
from ._spread import widen

if TYPE_CHECKING:  # types only: the targets and the sampler do not import this module
    from ._sampler import SampleJob
    from ._targets import EffectTargets

#: Most values (cells × genes) decoded at a time (float32; the counts conversion works on
#: float64 copies of a chunk).
CHUNK_VALUES = 2**21


def chunk_rows(batch_size: int, n_vars: int) -> int:
    """Cells per output chunk: ``batch_size``, at most :data:`CHUNK_VALUES` values."""
    return max(1, min(int(batch_size), CHUNK_VALUES // max(int(n_vars), 1)))


class OutputBuilder:
    """The rows of ``predict``'s output, appended chunk by chunk into one CSR float32 matrix.

    The CSR arrays are reserved for the densest possible output (``n_rows`` × genes values):
    pages never written are never resident, so the memory used is the output's own, and
    :meth:`build` shrinks the arrays in place (no copy). Where that reservation is refused, or
    more rows arrive than announced, the arrays grow by copying.

    Parameters
    ----------
    var_names
        The output's genes.
    n_rows
        The number of rows that will be added (a hint; more are accepted).
    """

    def __init__(self, var_names: pd.Index, n_rows: int):
        self.var_names = var_names
        g = max(len(var_names), 1)
        self._idx = np.int32 if max(int(n_rows), 1) * g < 2**31 else np.int64
        try:
            cap = int(n_rows) * g
            self._data, self._indices = np.empty(cap, np.float32), np.empty(cap, self._idx)
        except MemoryError:  # no address space for the worst case: grow as needed
            self._data, self._indices = np.empty(0, np.float32), np.empty(0, self._idx)
        self._row_nnz: list[np.ndarray] = []
        self._nnz = 0
        self._obs: list[pd.DataFrame] = []

    def _reserve(self, need: int) -> None:
        if need <= len(self._data):
            return
        cap = max(need, int(1.5 * len(self._data)))
        if self._idx is np.int32 and cap >= 2**31:
            self._idx = np.int64
        data, indices = np.empty(cap, np.float32), np.empty(cap, self._idx)
        data[:self._nnz], indices[:self._nnz] = self._data[:self._nnz], self._indices[:self._nnz]
        self._data, self._indices = data, indices

    def add(self, X: np.ndarray) -> None:
        """Append the dense rows ``X`` ``(b, n_vars)`` (stored sparse)."""
        m = sp.csr_matrix(np.asarray(X, dtype=np.float32))
        k = m.nnz
        self._reserve(self._nnz + k)
        self._data[self._nnz:self._nnz + k] = m.data
        self._indices[self._nnz:self._nnz + k] = m.indices
        self._row_nnz.append(np.diff(m.indptr))
        self._nnz += k

    def add_obs(self, obs: pd.DataFrame) -> None:
        """Append the ``obs`` rows of the cells added since the last call."""
        self._obs.append(obs)

    def build(self) -> ad.AnnData:
        """The output AnnData (CSR float32 ``X``); the builder is emptied."""
        data, indices, nnz = self._data, self._indices, self._nnz
        self._data = self._indices = None
        data.resize(nnz, refcheck=False)  # shrinking in place: no copy, unused pages released
        indices.resize(nnz, refcheck=False)
        counts = np.concatenate(self._row_nnz) if self._row_nnz else np.zeros(0, np.int64)
        indptr = np.zeros(len(counts) + 1, indices.dtype)
        np.cumsum(counts, out=indptr[1:])
        X = sp.csr_matrix((data, indices, indptr), shape=(len(counts), len(self.var_names)))
        obs = pd.concat(self._obs) if len(self._obs) > 1 else self._obs[0]
        self._obs, self._row_nnz = [], []
        return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=self.var_names))


#: How generated log1p values become counts (:func:`scdit.data.log1p_to_counts`), over a
#: chunk's cells (one label's) and all the output genes at once: each context's mean per gene
#: of the renormalised counts is the mean of the generated log1p cells (``"matched"``; a counts
#: evaluation normalises each cell by its total, which moved the means of ``"systematic"``
#: rounding on the bundled glioblastoma seen-patients benchmark).
COUNT_ROUNDING = "matched"


def decode_chunk(cells: CellStore, tokenizer, tokens: torch.Tensor, X, obs: pd.DataFrame, rng,
                 representation: str, depth: np.ndarray | None = None) -> np.ndarray:
    """Decode generated ``tokens`` ``(b, T, P)`` into copies of ``b`` reference cells (their
    expression ``X`` and ``obs`` rows), dense float32 ``(b, n_vars)``.

    Counts come from the tokenizer's ``decode_counts`` (scVI: sampled from its likelihood with
    the reference cell's library size of the modelled genes, times ``depth`` ``(b,)``, see
    :meth:`EffectTargets.depth_factor`) when ``representation="counts"`` and it has one.
    Otherwise a counts model's chunk comes back in log1p (the reference cells' own genes
    normalised, the modelled ones decoded): :class:`CellWriter` rounds it to counts.
    """
    X = X.toarray() if sp.issparse(X) else np.array(X, dtype=np.float32)
    X = X.astype(np.float32, copy=False)
    idx = cells.modelled
    trained = cells.config.data.representation
    z = torch.as_tensor(tokens, dtype=torch.float32)  # (b, T, P)
    if trained == "counts" and representation == "counts" and tokenizer.can_decode_counts:
        lib = X[:, idx].sum(1)  # (b,) reference library of the modelled genes
        if depth is not None:
            lib = lib * depth
        X[:, idx] = tokenizer.decode_counts(z, lib, obs=obs, generator=rng).numpy()
    elif trained == "counts":
        X = np.asarray(to_log1p(X, "counts"), dtype=np.float32)
        X[:, idx] = tokenizer.decode(z, obs=obs).numpy()
    else:
        X[:, idx] = tokenizer.decode(z, obs=obs).numpy()
    return X


def output_obs(cells: CellStore, label: str, ref: CellRows) -> pd.DataFrame:
    """``obs`` of the generated cells of ``label``: label, covariates, reference cell."""
    key = cells.config.data.condition_key
    obs = pd.DataFrame({key: label}, index=[f"{label}-{i}" for i in range(ref.n_obs)])
    for k in cells.covariates.keys:
        obs[k] = ref.obs[k].astype(str).to_numpy()
    obs["reference_cell"] = ref.obs["reference_cell"].to_numpy()
    return obs


class CellWriter:
    """Writes one label's generated cells into an :class:`OutputBuilder`, in order.

    Tokens arrive in consecutive row ranges (the whole prediction at once, or batch by batch
    as the generator integrates them); each range is decoded ``rows`` cells at a time, its
    unmodelled genes anchored (:attr:`anchor`, see :meth:`EffectTargets.unmodelled_anchor`),
    the generated genes of the cells flagged in :attr:`renormalise` rescaled to the total,
    rounded to counts (a counts model without a count decoder: all genes of the chunk at
    once, by :data:`COUNT_ROUNDING` within each context, at the reference cells' library
    sizes times :attr:`depth`) and the target ``prior`` applied (see
    :func:`target_prior_genes`). The random streams are
    drawn in row order, so how the rows are split does not change a log1p output (counts are
    rounded, and their means matched, per chunk).

    Parameters
    ----------
    out
        The output being built.
    cells, tokenizer
        The model's cell store and tokenizer.
    label
        The perturbation.
    ref
        The reference cells, one per generated cell.
    seeds
        The label's random streams.
    representation
        Output representation.
    rows
        Cells decoded at a time (see :func:`chunk_rows`).
    prior
        ``(ratio, gene columns)`` of the target prior, or ``None``.
    """

    def __init__(self, out: OutputBuilder, cells: CellStore, tokenizer, label: str,
                 ref: CellRows, seeds: LabelSeeds, representation: str, rows: int,
                 prior: tuple[float, list[int]] | None = None):
        self.out, self.cells, self.tokenizer, self.label = out, cells, tokenizer, label
        self.ref, self.representation, self.rows = ref, representation, int(rows)
        self.anchor = None
        #: Per cell, the factor of its reference cell's library size (``None``: all 1).
        self.depth: np.ndarray | None = None
        #: Per cell, whether its generated log1p values are rescaled so that with the genes
        #: carried over from its reference cell (after :attr:`anchor`) they sum to the
        #: normalisation's total
        #: (:func:`scdit.data.renormalise_log1p`; ``None``: none are). Set for
        #: the cells whose mean no estimate sets in contexts their label was not seen in (see
        #: :meth:`scdit.model.EffectTargets.unseen_here`).
        self.renormalise: np.ndarray | None = None
        self._counts_rng = seeds.rng(COUNTS)
        self._ratio, genes = prior if prior is not None else (1.0, [])
        self._prior_rngs = [(j, seeds.rng(PRIOR, j)) for j in genes]
        self._next = 0
        #: Whether the writer rounds log1p chunks to counts (else the decoder makes counts).
        self.rounds = representation == "counts" and not tokenizer.can_decode_counts \
            and cells.config.data.representation == "counts"
        self._groups: np.ndarray | None = None

    @property
    def anchor_representation(self) -> str:
        """Representation in which :attr:`anchor` writes: log1p where the writer rounds."""
        return "log1p" if self.rounds else self.representation

    def _to_counts(self, X: np.ndarray, a: int, e: int) -> np.ndarray:
        """Round the log1p chunk ``X`` of cells ``a:e`` to counts (see :data:`COUNT_ROUNDING`)."""
        if self._groups is None:
            keys = self.cells.context_keys(self.cells.frame(self.ref), self.ref.n_obs)
            self._groups = pd.factorize(pd.Series(keys, dtype=object))[0]
        lib = self.ref.obs[LIBRARY_KEY].to_numpy()[a:e]
        if self.depth is not None:
            lib = lib * self.depth[a:e]
        return log1p_to_counts(X, lib, rng=self._counts_rng, rounding=COUNT_ROUNDING,
                               groups=self._groups[a:e])

    @property
    def prior_columns(self) -> list[int]:
        """Output columns the target prior scales."""
        return [j for j, _ in self._prior_rngs]

    def write(self, start: int, tokens: torch.Tensor) -> None:
        """Write the cells ``start : start + len(tokens)`` from their tokens ``(b, T, P)``."""
        if start != self._next:
            raise RuntimeError(f"cells must be written in order: expected row {self._next}, "
                               f"got {start}.")
        ref = self.ref
        for s in range(0, len(tokens), self.rows):
            a, e = start + s, min(start + len(tokens), start + s + self.rows)
            part = ref[a:e]
            X = decode_chunk(self.cells, self.tokenizer, tokens[s:s + self.rows], part.X,
                             part.obs, self._counts_rng, self.anchor_representation,
                             None if self.depth is None else self.depth[a:e])
            if self.anchor is not None:
                self.anchor.apply(X, a, e)
            if self.renormalise is not None and self.anchor_representation == "log1p" \
                    and self.cells.config.data.representation == "counts":
                rows = np.flatnonzero(self.renormalise[a:e])
                if rows.size:
                    X[rows] = renormalise_log1p(X[rows], columns=self.cells.modelled)
            if self.rounds:
                X = self._to_counts(X, a, e)
            for j, rng in self._prior_rngs:
                X[:, j] = _prior_column(X[:, j], self._ratio, rng, self.representation)
            self.out.add(X)
        self._next = start + len(tokens)

    def finish(self) -> None:
        """Append the ``obs`` of the label's cells (all of them must have been written)."""
        if self._next != self.ref.n_obs:
            raise RuntimeError(f"{self._next} of {self.ref.n_obs} cells of {self.label!r} were "
                               "written.")
        self.out.add_obs(output_obs(self.cells, self.label, self.ref))


def target_prior_genes(cells: CellStore, summary: dict, label: str
                       ) -> tuple[float, list[int]] | None:
    """``(ratio, gene columns)`` of the target prior for ``label``: its unseen (feature-only)
    members that are measured genes are scaled by the training prior (``summary
    ["target_prior"]``: the typical ratio of a targeted gene's mean to control); ``None`` where
    the prior does not apply. A model with target marks (``ConditionConfig.target_marks``)
    generates the on-target change of its modelled genes itself, so those are left out."""
    prior = summary.get("target_prior") or {}
    if not prior or prior.get("n", 0) < 2:
        return None
    if np.sign(prior.get("q25", 0.0)) != np.sign(prior.get("q75", 0.0)):
        return None  # targets go both ways in training (mixed CRISPRa/i): no single prior
    vocab = cells.vocab
    targets = [m for m in vocab.members(label)
               if m in set(vocab.featured) and m in cells.var_names]
    if cells.config.conditions.target_marks:  # the network moves its marked targets itself
        marked = set(cells.var_names[cells.modelled])
        targets = [m for m in targets if m not in marked]
    if not targets:
        return None
    return float(np.exp(prior["log_ratio"])), [int(cells.var_names.get_loc(g)) for g in targets]


def _prior_column(col: np.ndarray, ratio: float, rng: np.random.Generator,
                  representation: str) -> np.ndarray:
    """One target gene's values scaled by ``ratio`` (counts: binomial thinning or Poisson
    excess, drawn from the gene's own stream ``rng``)."""
    if representation == "counts":
        if ratio <= 1:
            return rng.binomial(np.round(col).astype(np.int64), ratio)
        return np.round(col) + rng.poisson(np.round(col) * (ratio - 1))
    return np.log1p(np.expm1(col) * ratio)


class LabelSink:
    """Receives one label's generated tokens batch by batch (``sink(first_row, tokens)``, in
    row order) and passes them to its :class:`CellWriter`.

    Without ``finish`` each batch is written as it comes (memory bounded by the batch). With
    ``finish`` (a label whose means effect estimates set, or whose generated mean is kept
    through the tokenizer's clipping: they need all its cells) the tokens
    are collected, and once the last row has arrived ``finish(tokens)`` (shifted tokens) is
    written at once. The writer is finished after the label's last row.

    Parameters
    ----------
    writer
        The label's writer.
    n
        The label's number of cells.
    shape
        ``(T, P)`` of a cell's tokens.
    finish
        ``tokens -> tokens`` applied to all the label's tokens before writing, or ``None``.
    """

    def __init__(self, writer: CellWriter, n: int, shape: tuple[int, int], finish=None):
        self.writer, self.n, self.shape, self.finish = writer, int(n), tuple(shape), finish
        self._tokens: torch.Tensor | None = None

    def __call__(self, start: int, tokens: torch.Tensor) -> None:
        stop = start + len(tokens)
        if self.finish is None:
            self.writer.write(start, tokens)
        else:
            if self._tokens is None:
                self._tokens = torch.empty((self.n, *self.shape))
            self._tokens[start:stop] = tokens
            if stop == self.n:
                tokens, self._tokens = self.finish(self._tokens), None
                self.writer.write(0, tokens)
        if stop == self.n:
            self.writer.finish()


def label_finisher(targets: EffectTargets, job: SampleJob, ref, est: dict,
                   cov_df: pd.DataFrame | None, seeds: LabelSeeds, writer: CellWriter,
                   depth: np.ndarray | None = None, unmodelled: str = "decode",
                   spread: torch.Tensor | None = None):
    """:func:`finisher`, after each context's spread is calibrated by ``spread`` (factors
    ``(T, P)`` of :func:`~scdit.model.spread_factors`, applied by :func:`widen`) where given."""
    then = finisher(targets, job, ref, est, cov_df, seeds, writer, depth, unmodelled)
    if spread is None:
        return then

    def widened(tokens: torch.Tensor) -> torch.Tensor:
        tokens = widen(tokens, spread, targets.cells, cov_df, targets.tokenizer)
        return tokens if then is None else then(tokens)

    return widened


def finisher(targets: EffectTargets, job: SampleJob, ref, est: dict,
             cov_df: pd.DataFrame | None, seeds: LabelSeeds, writer: CellWriter,
             depth: np.ndarray | None = None, unmodelled: str = "decode"):
    """``tokens -> tokens`` of ``job``'s label whose means estimates set: shifted to the targets,
    the writer's anchoring of the unmodelled genes and library factors (``depth``) set. Without
    estimates (``est`` None): the generated means kept through clipping in the contexts the
    label was seen in (:meth:`EffectTargets.match_clipped`), or ``None`` (the batches are
    written as they come); the writer rescales the cells of contexts it was not seen in to the
    normalisation's total (:attr:`CellWriter.renormalise`) and with ``unmodelled="decode"``
    decodes the unmodelled genes (:meth:`EffectTargets.decoded_anchor`; not where carried)."""
    label = job.label
    if est is None:
        writer.renormalise = targets.unseen_here(label, cov_df, ref.n_obs)
        seen = targets.tokenizer.clips_output and targets.seen_here(label, cov_df, ref.n_obs)
        if unmodelled != "decode" or job.carry or not len(targets.cells.unmodelled):
            return (lambda tokens: targets.match_clipped(tokens, cov_df, label)) \
                if np.any(seen) else None

        def decode(tokens: torch.Tensor) -> torch.Tensor:
            tokens = targets.match_clipped(tokens, cov_df, label)
            writer.anchor = targets.decoded_anchor(ref, tokens, writer.anchor_representation,
                                                   seeds.rng(ANCHOR))
            if writer.anchor is not None:  # target-prior genes get the prior alone
                writer.anchor.shifts[:, np.isin(writer.anchor.cols, writer.prior_columns)] = 0
            return tokens

        return decode

    def finish(tokens: torch.Tensor) -> torch.Tensor:
        scale = writer.representation != "counts"  # counts output rounds zeros back itself
        tokens = targets.shift(est, tokens, cov_df, label, scale_stand_ins=scale)
        writer.anchor = targets.unmodelled_anchor(label, ref, est, writer.anchor_representation,
                                                  seeds.rng(ANCHOR), scale_stand_ins=scale)
        writer.depth = depth  # a seen perturbation's counts at its own depth
        if depth is not None and writer.anchor is not None and writer.anchor.lib is not None:
            writer.anchor.lib = writer.anchor.lib * depth
        return tokens

    return finish
