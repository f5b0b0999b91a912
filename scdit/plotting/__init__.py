"""Plots of predictions, evaluations and training (``scdit.pl``).

Every function returns a :class:`matplotlib.figure.Figure`, draws into ``ax=`` when given
(an Axes, or a sequence of Axes for multi-panel plots) and writes the figure to ``save=``
(a path) when given. New figures are created without pyplot, so they work on any backend
(including Agg) and never pile up in pyplot's figure list.

Examples
--------
>>> import scdit
>>> fig = scdit.pl.delta_scatter(pred, real, "perturbation", "control")  # doctest: +SKIP
>>> fig = scdit.pl.metric_bars(scdit.evaluate(pred, real, "perturbation"))  # doctest: +SKIP
"""

from ._benchmark import benchmark_bars, pca_overlay
from ._delta import delta_scatter
from ._embedding import compute_embedding, embedding
from ._summary import LOWER_IS_BETTER, metric_bars, training_curve

__all__ = [
    "LOWER_IS_BETTER",
    "benchmark_bars",
    "compute_embedding",
    "delta_scatter",
    "embedding",
    "metric_bars",
    "pca_overlay",
    "training_curve",
]
