"""Effect estimates: what a perturbation's mean should be, from reference cells (plain numpy).

The layer knows neither networks nor training. An :class:`EffectTable` holds group means and
standard errors of one set of coordinates (model tokens or log1p genes), label × context; the
estimators are small strategies over it (:func:`seen_mean`, :func:`additive`, :func:`typical`,
empirical-Bayes shrinkage, :class:`HeldOutContext` with its leave-one-context-out choice among
mean shift, kernel and slope, and the projection of an estimate onto the main axes of
expression); an :class:`EffectPlan` decides which one sets a prediction's mean
(:class:`EffectConfig`).
``scdit.evaluate``'s ``additive_shrunk`` and ``context_estimate`` baselines use the same code.
"""

from ._context import (
    BASIS_CELLS,
    EFFECT_RANK,
    apply_effect,
    candidates,
    context_effect,
    expression_basis,
    loco_scores,
    pc_basis,
    pc_coordinates,
    project_effect,
)
from ._estimators import (
    MIN_CONTEXTS,
    Estimate,
    HeldOutContext,
    additive,
    additive_labels,
    seen_mean,
    typical,
)
from ._plan import EffectConfig, EffectPlan
from ._shrinkage import (
    MAX_DIM,
    MIN_EFFECTS,
    SEEN_LIMIT,
    effect_prior,
    group_moments,
    posterior_effect,
)
from ._table import EffectTable

__all__ = [
    "BASIS_CELLS",
    "EFFECT_RANK",
    "MAX_DIM",
    "MIN_CONTEXTS",
    "MIN_EFFECTS",
    "SEEN_LIMIT",
    "EffectConfig",
    "EffectPlan",
    "EffectTable",
    "Estimate",
    "HeldOutContext",
    "additive",
    "additive_labels",
    "apply_effect",
    "candidates",
    "context_effect",
    "effect_prior",
    "expression_basis",
    "group_moments",
    "loco_scores",
    "pc_basis",
    "pc_coordinates",
    "posterior_effect",
    "project_effect",
    "seen_mean",
    "typical",
]
