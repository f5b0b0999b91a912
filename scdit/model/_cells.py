"""Cell bookkeeping of a fitted model: stored reference cells, source cells, covariate frames.

A fitted model keeps up to a few hundred training cells per (condition × covariates) group, in
the training representation (with each cell's library size for counts). They provide the
control cells a control-source model transports, the cells whose unmodelled genes and library
sizes a prediction carries over, and the group means of the effect estimators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..config import ScDiTConfig
from ..data import CellStore as DiskStore
from ..data import (
    ConditionVocab,
    CovariateVocab,
    canonical_label,
    check_expression,
    counts_to_log1p,
    get_matrix,
    library_size,
)

#: ``obs`` column of the stored reference cells holding each cell's library size (counts).
LIBRARY_KEY = "_scdit_library_size"


def n_cells_arg(n_cells) -> int:
    """A validated positive integer number of cells (integer-valued floats are accepted)."""
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | float | np.integer
                                                   | np.floating):
        raise TypeError(f"n_cells must be a positive integer, got {type(n_cells).__name__} "
                        f"{n_cells!r}.")
    if not float(n_cells).is_integer() or int(n_cells) < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}.")
    return int(n_cells)


def covariates_arg(covariates, *, frames: bool = False):
    """``covariates`` of ``predict`` / ``sample``: ``None``, a mapping ``{key: value}`` or (with
    ``frames``) a DataFrame with one row per cell; a clear ``TypeError`` otherwise."""
    if covariates is None or isinstance(covariates, Mapping):
        return covariates
    if frames and isinstance(covariates, pd.DataFrame):
        return covariates
    also = " or a DataFrame with one row per cell" if frames else ""
    raise TypeError(f"covariates must be a mapping {{key: value}} (e.g. {{'cell_type': 'T'}})"
                    f"{also}, got {type(covariates).__name__} {covariates!r}; pass a mapping "
                    "{key: value}.")


class CellRows:
    """Rows of an AnnData (repeats allowed) with their own ``obs``, whose expression is read a
    range of rows at a time instead of being copied (``n`` cells drawn from a few hundred
    stored ones would repeat them).

    ``cells[a:b]`` or ``cells[rows]`` is an AnnData of those rows; :meth:`columns` some genes
    of every row; :attr:`X` copies every row (avoid for large ``n``).

    Parameters
    ----------
    source
        The AnnData the rows are read from.
    rows
        Row positions in ``source``, one per cell.
    obs
        The cells' ``obs`` (one row each).
    invertible
        Whether the rows are distinct cells that automatic inversion may start from: given
        source cells, or stored control cells of the context drawn for a label with a member
        known only through its features (see :meth:`CellStore.reference_cells`).

    Attributes
    ----------
    start
        The cells automatic inversion starts from, one per row (``None``: noise starts): these
        rows if ``invertible``; for a seen label's own stored cells, distinct stored control
        cells of each row's context (:meth:`CellStore.paired_controls`).
    """

    def __init__(self, source: ad.AnnData, rows: np.ndarray, obs: pd.DataFrame,
                 invertible: bool = False):
        self.source, self.rows, self.obs = source, np.asarray(rows, dtype=np.int64), obs
        self.start: CellRows | None = self if invertible else None

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return len(self.rows)

    @property
    def var_names(self) -> pd.Index:
        """The genes."""
        return self.source.var_names

    @property
    def X(self):
        """Expression of every cell (a copy)."""
        return self.source.X[self.rows]

    def __getitem__(self, idx) -> ad.AnnData:
        return ad.AnnData(X=self.source.X[self.rows[idx]], obs=self.obs.iloc[idx],
                          var=pd.DataFrame(index=self.source.var_names))

    def columns(self, cols: np.ndarray):
        """Expression of the genes ``cols`` of every cell ``(n, len(cols))``."""
        return self.source.X[:, cols][self.rows]


def take(adata: ad.AnnData, rows: np.ndarray, covariates: Mapping[str, str] | None,
         invertible: bool = False) -> CellRows:
    """Rows of ``adata`` (repeats allowed) with unique names; originals in ``reference_cell``."""
    obs = adata.obs.iloc[rows].copy()
    obs["reference_cell"] = adata.obs_names[rows].to_numpy()
    obs.index = [str(i) for i in range(len(rows))]
    for k, v in (covariates or {}).items():
        obs[k] = str(v)
    return CellRows(adata, rows, obs, invertible)


#: Most training cells per (condition × covariates) group a model stores as reference cells.
#: The effect estimates (seen means, additive, held-out contexts) are means over them, so their
#: standard errors shrink with this number; the model file grows with it.
REFERENCE_CELLS = 1000


def make_reference(adata: ad.AnnData, X, cfg: ScDiTConfig, *,
                   max_per_group: int = REFERENCE_CELLS, seed: int = 0) -> ad.AnnData:
    """Up to ``max_per_group`` training cells per (condition × covariates) group, in the training
    representation, with their library sizes (counts). ``X`` is the in-memory matrix of
    ``adata``'s cells, or the on-disk store they are read from (:func:`scdit.data.open_cells`)."""
    keys = [cfg.data.condition_key, *cfg.data.covariate_keys]
    obs = adata.obs[keys].astype(str)
    rng = np.random.default_rng(seed)
    rows = []
    for _, idx in obs.groupby(keys, sort=True, observed=True).indices.items():
        rows.extend(rng.choice(idx, min(len(idx), max_per_group), replace=False))
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    sub = X.read(rows) if isinstance(X, DiskStore) else X[rows]
    ref = ad.AnnData(X=sp.csr_matrix(sub, dtype=np.float32), obs=obs.iloc[rows].copy(),
                     var=pd.DataFrame(index=adata.var_names.astype(str)))
    if cfg.data.representation == "counts":
        ref.obs[LIBRARY_KEY] = library_size(sub)
    return ref


class CellStore:
    """The stored reference cells of a model and the rules for picking cells from them.

    Parameters
    ----------
    reference
        The stored reference cells (see :func:`make_reference`).
    config, vocab, covariates, var_names
        The model's configuration, vocabularies and genes.
    modelled
        Column indices (into ``var_names``) of the genes the tokenizer models.
    """

    def __init__(self, reference: ad.AnnData, config: ScDiTConfig, vocab: ConditionVocab,
                 covariates: CovariateVocab, var_names: pd.Index, modelled: np.ndarray):
        self.reference = reference
        self.config = config
        self.vocab = vocab
        self.covariates = covariates
        self.var_names = var_names
        self.modelled = np.asarray(modelled)
        self.unmodelled = np.setdiff1d(np.arange(len(var_names)), self.modelled)
        self.key = config.data.condition_key
        self._canonical_obs: np.ndarray | None = None
        self._controls: dict[tuple, np.ndarray] | None = None  # see paired_controls
        self._seen_pairs: set | None = None

    # ------------------------------------------------------------------ labels and contexts
    def canonical(self, label: str) -> str:
        """Canonical form of a label: sorted members joined, or the control label."""
        return canonical_label(str(label), self.vocab.control, self.vocab.separator)

    def canonical_labels(self) -> np.ndarray:
        """Canonical label of every reference cell."""
        if self._canonical_obs is None:
            self._canonical_obs = self.reference.obs[self.key].astype(str).map(
                self.canonical).to_numpy()
        return self._canonical_obs

    def context_keys(self, cov_df: pd.DataFrame | None, n: int) -> list[tuple[str, ...]]:
        """Per row, the covariate context as a tuple of strings (``()`` without covariates)."""
        keys = list(self.covariates.keys)
        if not keys:
            return [()] * n
        return [tuple(r) for r in cov_df[keys].astype(str).to_numpy()]

    def contexts(self, cov_df: pd.DataFrame | None) -> list[tuple[str, ...]]:
        """The distinct covariate contexts of ``cov_df``, in order (``[()]`` without)."""
        n = len(cov_df) if self.covariates.keys else 1
        return list(dict.fromkeys(self.context_keys(cov_df, n)))

    def reference_contexts(self) -> list[tuple[str, ...]]:
        """Context of every reference cell."""
        return self.context_keys(self.reference.obs, self.reference.n_obs)

    def seen_in_context(self, label: str, cov_df: pd.DataFrame) -> np.ndarray:
        """Per row of ``cov_df``: was ``label`` seen in training in that covariate context?"""
        keys = list(self.covariates.keys)
        if self._seen_pairs is None:
            ctx = self.reference.obs[keys].astype(str).agg("\x1f".join, axis=1)
            self._seen_pairs = set(zip(self.canonical_labels(), ctx, strict=True))
        c = self.canonical(label)
        ctx = cov_df[keys].astype(str).agg("\x1f".join, axis=1)
        return np.array([(c, x) in self._seen_pairs for x in ctx], dtype=bool)

    def covariate_frame(self, covariates, n: int) -> pd.DataFrame:
        """One row of covariates per cell from a mapping (one context) or a DataFrame."""
        keys = list(self.covariates.keys)
        if isinstance(covariates, pd.DataFrame):
            missing = [k for k in keys if k not in covariates]
            if missing:
                raise KeyError(f"covariates lacks column(s) {missing}; the model was trained "
                               f"with {keys}.")
            if len(covariates) != n:
                raise ValueError(f"covariates has {len(covariates)} rows for {n} cells; pass "
                                 "one row per cell, or a mapping for one context.")
            return covariates.reset_index(drop=True)
        covariates = dict(covariates or {})
        missing = [k for k in keys if k not in covariates]
        if missing:
            raise KeyError(f"Pass a value for covariate(s) {missing} (trained with {keys}).")
        return pd.DataFrame({k: [str(covariates[k])] * n for k in keys})

    # ------------------------------------------------------------------ expression
    def log1p_columns(self, cells: ad.AnnData, cols: np.ndarray | None = None):
        """log1p expression of the columns ``cols`` of ``cells`` (default: the unmodelled
        genes), sparse if ``cells.X`` is (counts normalised by each cell's whole library)."""
        cols = self.unmodelled if cols is None else cols
        X = cells.columns(cols) if isinstance(cells, CellRows) else cells.X[:, cols]
        if self.config.data.representation == "counts":
            X = counts_to_log1p(X, lib=cells.obs[LIBRARY_KEY].to_numpy())
        return X

    def log1p_mean(self, cells: ad.AnnData) -> np.ndarray:
        """Mean log1p ``(U,)`` of the unmodelled genes of ``cells``, without densifying."""
        X = self.log1p_columns(cells)
        return np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / max(X.shape[0], 1)

    # ------------------------------------------------------------------ picking cells
    def check_source(self, source: ad.AnnData, layer: str | None) -> ad.AnnData:
        """``source`` cells validated and laid out like the reference cells."""
        if not isinstance(source, ad.AnnData):
            raise TypeError(f"source must be an AnnData of cells, got {type(source).__name__}.")
        if source.n_obs == 0:
            raise ValueError("source has no cells.")
        missing = self.var_names.difference(source.var_names)
        extra = source.var_names.difference(self.var_names)
        if len(missing):
            raise ValueError(
                f"source has different genes: {len(missing)} training gene(s) are missing (e.g. "
                f"{list(missing[:5])}) and {len(extra)} are extra. Subset/reorder source to the "
                "training genes: source[:, model.var_names].")
        X = get_matrix(source, layer, name="source")
        where = "source.X" if layer is None else f"source.layers[{layer!r}]"
        rep, trained = check_expression(X, where=where), self.config.data.representation
        if rep != trained:
            raise ValueError(f"source holds {rep} but the model was trained on {trained}; pass "
                             "source in the training representation (layer=...).")
        keys = [k for k in self.covariates.keys if k not in source.obs]
        if keys:
            raise KeyError(f"source.obs lacks covariate column(s) {keys} used in training.")
        obs = source.obs[list(self.covariates.keys)].astype(str).copy()
        self.covariates.encode(obs)  # unknown covariate values → clear error
        X = X[:, source.var_names.get_indexer(self.var_names)]
        ref = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs,
                         var=pd.DataFrame(index=self.var_names))
        if trained == "counts":
            ref.obs[LIBRARY_KEY] = library_size(X)
        if self.key in source.obs:  # the source cells' own condition (their depth, see
            ref.obs[self.key] = source.obs[self.key].astype(str).to_numpy()  # depth_factors)
        return ref

    def _check_covariate_keys(self, covariates) -> None:
        unknown = sorted(set(covariates or {}) - set(self.covariates.keys))
        if unknown:
            raise KeyError(f"Unknown covariate key(s) {unknown}; the model was trained with "
                           f"{list(self.covariates.keys)} as covariate keys.")

    def check_covariates(self, covariates: Mapping[str, str] | None) -> None:
        """Clear errors for unknown covariate keys or values of a ``{key: value}`` mapping."""
        if not covariates:
            return
        self._check_covariate_keys(covariates)
        for key, value in covariates.items():
            cats = self.covariates.categories[key]
            if str(value) not in cats:
                raise KeyError(f"Unknown value(s) {[str(value)]} for covariate {key!r}; values "
                               f"seen in training: {list(cats)}.")

    def control_cells(self, label: str, n: int, covariates, rng) -> ad.AnnData:
        """Stored control cells to transport: of the given context, else of the contexts the
        perturbation was seen in, else any."""
        obs = self.reference.obs
        mask = obs[self.key].to_numpy() == self.vocab.control
        if covariates:
            self._check_covariate_keys(covariates)
            for k, v in dict(covariates).items():
                mask &= obs[k].astype(str).to_numpy() == str(v)
            if not mask.any():
                raise ValueError(f"No stored control cells for covariates {dict(covariates)}; "
                                 "pass source=control cells of that context.")
        elif self.covariates.keys:
            seen = self.canonical_labels() == self.canonical(label)
            if seen.any():
                keys = list(self.covariates.keys)
                ctx_seen = set(map(tuple, obs.loc[seen, keys].astype(str).to_numpy()))
                in_ctx = np.array([tuple(r) in ctx_seen for r in obs[keys].astype(str).to_numpy()])
                if (mask & in_ctx).any():
                    mask &= in_ctx
        pool = np.flatnonzero(mask)
        return take(self.reference, rng.choice(pool, n, replace=True),
                    dict(covariates) if covariates else None)

    def reference_cells(self, label: str, src: ad.AnnData | None, n_cells: int | None,
                        covariates, rng, featured: bool = False) -> CellRows:
        """Cells a prediction of ``label`` carries over: the given source cells (each used
        ``n // n_source`` times, the remainder drawn without replacement), else stored cells
        of the label (of the context if given), else stored control cells. ``featured`` (a
        label with a member known only through its features): the stored control cells of
        the context are drawn without replacement where there are at least ``n``, and are
        then their own inversion :attr:`~CellRows.start`, as are given source cells used once
        each. A seen label's own stored cells get :meth:`paired_controls` as their start."""
        self._check_covariate_keys(covariates)
        if src is not None:
            n = src.n_obs if n_cells is None else n_cells_arg(n_cells)
            m = src.n_obs
            rows = np.arange(n) if n == m else np.sort(np.concatenate(
                [np.tile(np.arange(m), n // m), rng.choice(m, n % m, replace=False)]))
            return take(src, rows, covariates, invertible=n <= m)
        n = 100 if n_cells is None else n_cells_arg(n_cells)
        obs = self.reference.obs
        label_key = self.canonical(label)
        pool = np.flatnonzero(self.canonical_labels() == label_key)
        # own stored cells of a perturbation (not the control label) pair with control cells
        distinct = featured and len(pool) == 0
        own = len(pool) > 0 and label_key != self.vocab.control
        if len(pool) == 0:
            pool = np.flatnonzero(obs[self.key].to_numpy() == self.vocab.control)
        if covariates:
            self.covariate_frame(covariates, 1)
            self.covariates.encode(pd.DataFrame({k: [str(v)] for k, v in covariates.items()}))
            mask = np.ones(len(pool), bool)
            for k, v in covariates.items():
                mask &= obs[k].astype(str).to_numpy()[pool] == str(v)
            if mask.any():
                pool = pool[mask]
            else:  # context never seen with this perturbation: use its control cells
                ctrl = obs[self.key].to_numpy() == self.vocab.control
                for k, v in covariates.items():
                    ctrl &= obs[k].astype(str).to_numpy() == str(v)
                pool = np.flatnonzero(ctrl) if ctrl.any() else pool
                distinct &= bool(ctrl.any())  # not other contexts' cells under this one's
                own = False
        distinct &= len(pool) >= n
        ref = take(self.reference, rng.choice(pool, n, replace=not distinct), covariates,
                   invertible=distinct)
        if own:
            ref.start = self.paired_controls(ref, rng)
        return ref

    def paired_controls(self, ref: CellRows, rng) -> CellRows | None:
        """For every row of ``ref``, a distinct stored control cell of the row's context
        (``None`` where a context has fewer stored control cells than rows): the cells a seen
        perturbation's counterfactuals start from without given source cells."""
        if self._controls is None:  # stored control rows per context, in row order
            obs = self.reference.obs
            ctrl = np.flatnonzero(obs[self.key].to_numpy() == self.vocab.control)
            groups: dict[tuple, list[int]] = {}
            for row, ctx in zip(ctrl, self.context_keys(obs.iloc[ctrl], len(ctrl)), strict=True):
                groups.setdefault(ctx, []).append(row)
            self._controls = {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}
        wanted = self.context_keys(ref.obs, ref.n_obs)
        rows = np.empty(ref.n_obs, dtype=np.int64)
        for ctx in sorted(set(wanted)):
            need = np.flatnonzero([w == ctx for w in wanted])
            pool = self._controls.get(ctx, np.empty(0, dtype=np.int64))
            if len(pool) < len(need):
                return None
            rows[need] = rng.choice(pool, len(need), replace=False)
        return take(self.reference, rows, None, invertible=True)

    def frame(self, cells: ad.AnnData) -> pd.DataFrame | None:
        """The covariate columns of ``cells`` (``None`` without covariates)."""
        return cells.obs[list(self.covariates.keys)] if self.covariates.keys else None


def labels_arg(perturbations: str | Sequence[str]) -> list[str]:
    """``predict``'s perturbations as a non-empty list of strings (clear errors otherwise)."""
    if isinstance(perturbations, str):
        return [perturbations]
    if perturbations is None or not isinstance(perturbations, Sequence | np.ndarray | pd.Index):
        raise TypeError(f"perturbations must be a label or a list of labels, got "
                        f"{perturbations!r}.")
    labels = list(perturbations)
    bad = [p for p in labels if not isinstance(p, str)]
    if bad:
        raise TypeError(f"perturbation labels must be strings, got {bad[:5]}.")
    if not labels:
        raise ValueError("perturbations is empty; pass at least one perturbation label.")
    return labels
