"""Evaluation of perturbation predictions: metrics, baselines, :func:`evaluate` and benchmarks.

See ``EVALUATION.md`` for the metric definitions; :data:`DEFINITIONS` holds one line per metric.
"""

import sys as _sys
import types as _types

from . import _metrics as metrics
from ._baselines import ALL_BASELINES, BASELINES, baseline_predictions, detect_control
from ._benchmark import DEFAULT_BASELINES, benchmark
from ._de import top_k_de, welch_t
from ._evaluate import DEFINITIONS, LOWER_IS_BETTER, METRICS, evaluate, summarize
from ._linear import LinearBaseline
from ._report import normalized_scores, write_report

__all__ = [
    "ALL_BASELINES",
    "BASELINES",
    "DEFAULT_BASELINES",
    "DEFINITIONS",
    "LOWER_IS_BETTER",
    "LinearBaseline",
    "METRICS",
    "baseline_predictions",
    "benchmark",
    "detect_control",
    "evaluate",
    "metrics",
    "normalized_scores",
    "summarize",
    "top_k_de",
    "welch_t",
    "write_report",
]


class _CallableModule(_types.ModuleType):
    """``scdit.evaluate`` is both this subpackage and a function: ``scdit.evaluate(pred, real,
    ...)`` calls :func:`evaluate`, while ``scdit.evaluate.summarize`` etc. stay reachable."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
