"""The effect table: group means and standard errors of reference cells, label × context.

One table describes one set of coordinates (the model's tokens, or log1p genes): for every
``(label, context)`` group of reference cells, the mean and the squared standard error of the
mean. Effects are differences to the control group of the same context. Groups are summarised
the first time a context is asked for, so that a prediction touching one context never reads
the others; the table object holds what it has computed and nothing else does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._shrinkage import effect_prior, group_moments, posterior_effect

Context = tuple  # a tuple of covariate values; () without covariates
Moments = tuple  # (mean (D,), se2 (D,) or None)


def _group_mean(X) -> np.ndarray:
    """Column means of ``X`` (dense or sparse) in float64, without densifying."""
    return np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / max(X.shape[0], 1)


class EffectTable:
    """Per-context group statistics of one set of coordinates.

    Parameters
    ----------
    values
        ``rows -> (len(rows), D)`` array (dense or sparse) of the coordinates of reference rows,
        or an array ``(n, D)`` holding them.
    labels
        ``(n,)`` canonical label of each reference row (combinations with sorted members).
    contexts
        One context tuple per reference row (``()`` for every row without covariates).
    control
        The canonical control label.
    units
        ``(D,)`` size of one coordinate in natural units (e.g. a token's standard deviation in
        log1p): shrinkage and the held-out-context estimators work in these units, since their
        eigenvalue clipping and distances are not invariant to rescaling. ``None``: 1.
    with_se
        Also compute squared standard errors (needed for shrinkage); else only means.
    chunk
        Rows read at a time.
    moments
        Precomputed ``{(label, context): (mean, se2 or None)}`` of every group (e.g. from a
        sparse-aware group reduction); the table then reads ``values`` only where it needs
        cells (the held-out-context kernel's control cells).
    """

    def __init__(self, values: Callable[[np.ndarray], np.ndarray] | np.ndarray,
                 labels: Sequence[str], contexts: Sequence[Context], control: str, *,
                 units: np.ndarray | None = None, with_se: bool = True, chunk: int = 8192,
                 moments: dict | None = None):
        self._values = values if callable(values) else (lambda rows, _v=values: _v[rows])
        self.labels = np.asarray(labels, dtype=object)
        self._row_context = [tuple(c) for c in contexts]
        if len(self._row_context) != len(self.labels):
            raise ValueError(f"labels has {len(self.labels)} rows but contexts "
                             f"{len(self._row_context)}.")
        self.control = control
        self.units = None if units is None else np.asarray(units, dtype=np.float64)
        self.with_se = with_se
        self.chunk = int(chunk)
        self.contexts: list[Context] = list(dict.fromkeys(self._row_context))
        self._stats: dict[Context, dict[str, Moments]] = {}
        self._means: dict[tuple[str, Context], np.ndarray | None] = {}
        self._present: dict[Context, set] = {}
        self._priors: dict[Context, tuple[np.ndarray, int] | None] = {}
        self._posteriors: dict[tuple[str, Context, float | None], np.ndarray] = {}
        if moments is not None:
            for (lab, ctx), m in moments.items():
                self._stats.setdefault(tuple(ctx), {})[lab] = m
            for ctx in self.contexts:
                self._stats.setdefault(ctx, {})
            self._present = {ctx: set(d) for ctx, d in self._stats.items()}

    # ------------------------------------------------------------------ groups
    def values(self, rows: np.ndarray) -> np.ndarray:
        """Coordinates ``(len(rows), D)`` of reference rows (dense float64)."""
        X = self._values(rows)
        return np.asarray(_dense(X), dtype=np.float64)

    def rows(self, ctx: Context, label: str | None = None) -> np.ndarray:
        """Reference rows of context ``ctx`` (and of ``label`` if given)."""
        mask = np.fromiter((c == ctx for c in self._row_context), bool, len(self._row_context))
        if label is not None:
            mask &= self.labels == label
        return np.flatnonzero(mask)

    def stats(self, ctx: Context) -> dict[str, Moments]:
        """Per label with reference cells in ``ctx``: ``(mean, se2)`` (``se2`` ``None`` for a
        single cell or without ``with_se``)."""
        if ctx not in self._stats:
            rows = self.rows(ctx)
            labels = self.labels[rows]
            if self.with_se:
                X = [np.asarray(_dense(self._values(rows[s:s + self.chunk])), dtype=np.float64)
                     for s in range(0, len(rows), self.chunk)]
                X = np.concatenate(X) if X else np.zeros((0, 0))
                self._stats[ctx] = {lab: group_moments(X[labels == lab])
                                    for lab in np.unique(labels)}
            else:
                self._stats[ctx] = {lab: (self.mean(lab, ctx), None) for lab in np.unique(labels)}
        return self._stats[ctx]

    def mean(self, label: str, ctx: Context) -> np.ndarray | None:
        """Mean ``(D,)`` of ``label`` in ``ctx``; ``None`` without reference cells there.

        Without ``with_se`` only the groups asked for are ever read."""
        if self.with_se:
            s = self.stats(ctx).get(label)
            return None if s is None else s[0]
        key = (label, ctx)
        if key not in self._means:
            rows = self.rows(ctx, label)
            self._means[key] = _group_mean(self._values(rows)) if len(rows) else None
        return self._means[key]

    def has(self, label: str, ctx: Context) -> bool:
        """Whether ``label`` has reference cells in ``ctx``."""
        if ctx not in self._present:
            self._present[ctx] = set(self.labels[self.rows(ctx)])
        return label in self._present[ctx]

    def effect(self, label: str, ctx: Context) -> np.ndarray | None:
        """``mean(label) − mean(control)`` in ``ctx`` (``None`` if either is missing)."""
        m, c = self.mean(label, ctx), self.mean(self.control, ctx)
        return None if m is None or c is None else m - c

    def pool(self, label: str, exclude: Context | None = None) -> list[Context]:
        """Contexts (other than ``exclude``) with reference cells of ``label`` and control."""
        return [c for c in self.contexts if c != exclude
                and self.has(label, c) and self.has(self.control, c)]

    def scale(self) -> np.ndarray | float:
        """Natural units of the coordinates (1.0 when ``units`` is ``None``)."""
        return 1.0 if self.units is None else self.units

    # ------------------------------------------------------------------ shrinkage
    def prior(self, ctx: Context) -> tuple[np.ndarray, int] | None:
        """Empirical-Bayes prior covariance of the effects in ``ctx`` (natural units) and the
        number of effects it comes from (labels with ≥ 2 cells); ``None`` with fewer than two
        such effects or fewer than two control cells."""
        if ctx not in self._priors:
            stats = self.stats(ctx)
            ctrl = stats.get(self.control)
            pairs = [v for lab, v in stats.items() if lab != self.control and v[1] is not None]
            self._priors[ctx] = None
            if ctrl is not None and ctrl[1] is not None and len(pairs) >= 2:
                s = self.scale()
                effects = np.stack([(m - ctrl[0]) * s for m, _ in pairs])
                noise = np.stack([(se2 + ctrl[1]) * s**2 for _, se2 in pairs])
                self._priors[ctx] = (effect_prior(effects, noise), len(pairs))
        return self._priors[ctx]

    def shrunk_mean(self, label: str, ctx: Context, limit: float | None = None
                    ) -> np.ndarray | None:
        """Control mean plus the posterior mean of ``label``'s effect in ``ctx`` under the
        context's prior; the raw mean where no prior or no standard error is available.
        ``limit``: limited translation in standard errors (see
        :func:`~scdit.effects.posterior_effect`)."""
        stats = self.stats(ctx)
        if label not in stats:
            return None
        prior = self.prior(ctx)
        if label == self.control or stats[label][1] is None or prior is None:
            return stats[label][0]
        key = (label, ctx, limit)
        if key not in self._posteriors:
            (m, se2), (c, c_se2) = stats[label], stats[self.control]
            s = self.scale()
            post = posterior_effect((m - c) * s, (se2 + c_se2) * s**2, prior[0],
                                    limit=limit)
            self._posteriors[key] = c + post / s
        return self._posteriors[key]


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else X
