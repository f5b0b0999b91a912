"""Effect estimators: what a perturbation's mean should be in a context, from an effect table.

Each estimator is a small named strategy over an :class:`~scdit.effects.EffectTable`:

* :func:`seen_mean` — the label's own reference mean in the context;
* :func:`additive` — an unseen combination ``A+B``: ``control + Σ (mean_m − control)`` over its
  members, each member's mean optionally replaced by its empirical-Bayes shrunk mean;
* :class:`HeldOutContext` — a label never seen in the context: the context's control mean plus
  the effect estimated from the other contexts (mean shift, kernel or slope, chosen by
  leave-one-context-out; :func:`scdit.effects.context_effect`);
* :func:`typical` — a perturbation the model knows nothing about: the average of the
  perturbations seen in the context (the ``mean`` baseline of :func:`scdit.evaluate`).

They return an :class:`Estimate`: weighted terms whose sum is the target mean, so that a caller
can apply the same weights to other coordinates (e.g. genes outside a model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._context import context_effect, pc_basis
from ._shrinkage import SEEN_LIMIT
from ._table import Context, EffectTable

#: Training contexts needed for the default held-out-context estimate (LOCO needs 3).
MIN_CONTEXTS = 3


@dataclass
class Estimate:
    """A target mean as weighted terms.

    Attributes
    ----------
    kind
        ``"seen"``, ``"additive"``, ``"additive_shrunk"``, ``"context"`` or ``"typical"``.
    terms
        ``[(vector (D,), weight), ...]``; the target mean is ``Σ weight × vector``.
    labels
        ``[(label, weight), ...]`` behind the terms (``seen``/``additive``/``typical``); empty for
        ``context``, whose single term is the estimated mean itself.
    info
        Estimator details (``context``: method, parameter, LOCO scores, weights, slope, ...).
    """

    kind: str
    terms: list[tuple[np.ndarray, float]]
    labels: list[tuple[str, float]] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        """The target mean ``Σ weight × vector``."""
        return sum(w * v for v, w in self.terms)


def seen_mean(table: EffectTable, label: str, ctx: Context, *, shrink: bool = False
              ) -> Estimate | None:
    """The reference mean of a label in a context.

    Parameters
    ----------
    table
        Effect table of the reference cells.
    label, ctx
        Canonical label and context.
    shrink
        Use the empirical-Bayes shrunk mean (:meth:`EffectTable.shrunk_mean`), with limited
        translation (:data:`~scdit.effects.SEEN_LIMIT` standard errors at most from the raw
        mean).

    Returns
    -------
    An :class:`Estimate` of kind ``"seen"``, or ``None`` without reference cells there.
    """
    if not table.has(label, ctx):
        return None
    vec = table.shrunk_mean(label, ctx, limit=SEEN_LIMIT) if shrink else table.mean(label, ctx)
    return Estimate("seen", [(vec, 1.0)], [(label, 1.0)])


def additive_labels(members: tuple[str, ...], control: str) -> list[tuple[str, float]]:
    """The weighted labels of the additive estimate: each member ``+1``, control ``1 − k``."""
    return [(m, 1.0) for m in members] + [(control, 1.0 - len(members))]


def additive(table: EffectTable, members: tuple[str, ...], ctx: Context, *,
             shrink: bool = False) -> Estimate | None:
    """The additive estimate ``control + Σ (mean_m − control)`` of a combination.

    Parameters
    ----------
    table
        Effect table of the reference cells.
    members
        The combination's members (two or more).
    ctx
        The context.
    shrink
        Replace each member's mean by its empirical-Bayes shrunk mean.

    Returns
    -------
    An :class:`Estimate` of kind ``"additive"`` / ``"additive_shrunk"`` whose ``labels`` are
    the members (+1 each) and control (``1 − k``), or ``None`` unless every member and
    control have reference cells in ``ctx``.
    """
    labels = additive_labels(members, table.control)
    if len(members) < 2 or any(not table.has(m, ctx) for m, _ in labels):
        return None
    get = table.shrunk_mean if shrink else table.mean
    return Estimate("additive_shrunk" if shrink else "additive",
                    [(get(m, ctx), w) for m, w in labels], labels)


def typical(table: EffectTable, labels, ctx: Context) -> Estimate | None:
    """The mean of a typical perturbation in a context: the average of the means of the
    perturbed ``labels`` with reference cells there (each counts once), i.e. the control mean
    plus the average training effect; in a context without any, its control mean plus the
    average effect over the other contexts (each (label, context) once), as the ``mean``
    baseline of :func:`scdit.evaluate`.

    For a perturbation the model cannot place (never seen, no perturbation features), this is
    the best the training data says without further information.

    Parameters
    ----------
    table
        Effect table of the reference cells.
    labels
        Candidate canonical labels (the control label and those without cells in ``ctx`` are
        skipped).
    ctx
        The context.

    Returns
    -------
    An :class:`Estimate` of kind ``"typical"`` whose ``labels`` are the averaged perturbations
    (weight ``1/K`` each; empty for the average over other contexts, ``info["pooled"]``), or
    ``None`` where neither applies (no control cells in ``ctx``, or no perturbation anywhere).
    """
    perturbed = sorted(set(labels) - {table.control})
    use = [lab for lab in perturbed if table.has(lab, ctx)]
    if use:
        weighted = [(lab, 1.0 / len(use)) for lab in use]
        return Estimate("typical", [(table.mean(lab, ctx), w) for lab, w in weighted], weighted)
    if not table.has(table.control, ctx):
        return None
    effects = [table.effect(lab, c) for c in table.contexts
               if c != ctx and table.has(table.control, c)
               for lab in perturbed if table.has(lab, c)]
    if not effects:
        return None
    return Estimate("typical", [(table.mean(table.control, ctx), 1.0),
                                (np.mean(effects, axis=0), 1.0)], info={"pooled": True})


class HeldOutContext:
    """The mean of a label in a context where it has no reference cells.

    The control mean ``c`` of the context (given, e.g. from the cells to transport, or the
    table's) plus the effect estimated from the other contexts with cells of the label and of
    control (:func:`scdit.effects.context_effect`, in the table's natural units). The kernel's
    principal components are fitted on the control cells of those contexts and cached per set
    of contexts.
    """

    def __init__(self, table: EffectTable):
        self.table = table
        self._bases: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def available(self, label: str, ctx: Context, *, min_contexts: int = 2) -> bool:
        """Whether ``label`` has cells (and control) in ≥ ``min_contexts`` other contexts."""
        return len(self.table.pool(label, exclude=ctx)) >= min_contexts

    def basis(self, pool: list[Context]) -> tuple[np.ndarray, np.ndarray]:
        """Whitened PC basis of the control cells of the contexts ``pool`` (natural units)."""
        key = tuple(pool)
        if key not in self._bases:
            t = self.table
            rows = np.concatenate([t.rows(k, t.control) for k in pool])
            self._bases[key] = pc_basis(t.values(rows) * t.scale())
        return self._bases[key]

    def estimate(self, label: str, ctx: Context, control_mean: np.ndarray | None = None
                 ) -> Estimate | None:
        """The estimated mean of a label in a context where it has no reference cells.

        Parameters
        ----------
        label, ctx
            Canonical label and the held-out context.
        control_mean
            Control mean ``(D,)`` of the context in the table's coordinates (e.g. of the cells
            to transport); default: the table's control mean of ``ctx``.

        Returns
        -------
        An :class:`Estimate` of kind ``"context"`` whose ``info`` holds the estimator chosen
        (``method``, ``param``, ``loco``, ``loco_mean``, ``weights``, ``slope``), the ``pool``
        of contexts, the natural-unit ``effect``, ``control_mean`` and ``c_from_source``;
        ``None`` with fewer than two other contexts or no control mean.
        """
        t = self.table
        pool = t.pool(label, exclude=ctx)
        c = control_mean if control_mean is not None else t.mean(t.control, ctx)
        if len(pool) < 2 or c is None:
            return None
        s = t.scale()
        C = np.stack([t.mean(t.control, k) for k in pool]) * s
        E = np.stack([t.mean(label, k) for k in pool]) * s - C
        est, info = context_effect(E, C, c * s, basis=self.basis(pool))
        info.update(pool=pool, effect=est, c_from_source=control_mean is not None,
                    control_mean=np.asarray(c, dtype=np.float64))
        return Estimate("context", [((c * s + est) / s, 1.0)], [], info)

    def with_effect(self, est: Estimate, effect: np.ndarray) -> Estimate:
        """``est`` with its natural-unit effect replaced (e.g. after a projection)."""
        s, c = self.table.scale(), est.info["control_mean"]
        info = dict(est.info, effect=effect)
        return Estimate("context", [((c * s + effect) / s, 1.0)], [], info)
