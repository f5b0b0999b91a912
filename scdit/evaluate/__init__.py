"""Evaluation of perturbation predictions: metrics, baselines, :func:`evaluate` and summaries.

See ``docs/evaluation.md`` for the metric and baseline definitions; :data:`DEFINITIONS` holds
one line per metric.
Conditions are matched order-free (``"B+A"`` is ``"A+B"``). The benchmark runner and its report
are pipelines (:func:`scdit.benchmark`, :func:`scdit.write_report`).
"""

import sys as _sys
import types as _types

from ..data import detect_control
from . import _metrics as metrics
from ._baselines import (
    ALL_BASELINES,
    BASELINES,
    SHIFT_BASELINES,
    EffectSource,
    baseline_predictions,
)
from ._de import group_stats, top_k_de, welch_t, welch_t_cells
from ._distribution import dense_rows, fit_pca
from ._evaluate import DEFINITIONS, LOWER_IS_BETTER, METRICS, evaluate
from ._groups import GroupedData, align_genes, group_data
from ._linear import LinearBaseline
from ._summary import normalized_scores, summarize

__all__ = [
    "ALL_BASELINES",
    "BASELINES",
    "DEFINITIONS",
    "EffectSource",
    "GroupedData",
    "LOWER_IS_BETTER",
    "LinearBaseline",
    "METRICS",
    "SHIFT_BASELINES",
    "align_genes",
    "baseline_predictions",
    "dense_rows",
    "detect_control",
    "evaluate",
    "fit_pca",
    "group_data",
    "group_stats",
    "metrics",
    "normalized_scores",
    "summarize",
    "top_k_de",
    "welch_t",
    "welch_t_cells",
]


class _CallableModule(_types.ModuleType):
    """``scdit.evaluate`` is both this subpackage and a function: ``scdit.evaluate(pred, real,
    ...)`` calls :func:`evaluate`, while ``scdit.evaluate.summarize`` etc. stay reachable."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
