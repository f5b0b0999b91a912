"""Evaluation of perturbation predictions: metrics, baselines and :func:`evaluate`.

See ``EVALUATION.md`` for the metric definitions; :data:`DEFINITIONS` holds one line per metric.
"""

from . import _metrics as metrics
from ._baselines import BASELINES, baseline_predictions, detect_control
from ._de import top_k_de, welch_t
from ._evaluate import DEFINITIONS, METRICS, evaluate, summarize

__all__ = [
    "BASELINES",
    "DEFINITIONS",
    "METRICS",
    "baseline_predictions",
    "detect_control",
    "evaluate",
    "metrics",
    "summarize",
    "top_k_de",
    "welch_t",
]
