"""Pipelines: the top layer, the only place that calls ``fit`` together with ``evaluate`` and the
plots.

* :func:`benchmark` scores perturbation models on a split beside the baselines and the
  split-half ceiling; :func:`write_report` writes its CSV / Markdown / HTML report.
* :func:`main` is the ``scdit`` command line (``scdit benchmark ...``, ``python -m scdit``).
* :mod:`scdit.pipelines.demo` is the end-to-end demo (``python -m scdit.demo``).

Lower layers (data, tokenizers, evaluate, plotting, ...) never import this package.
"""

from . import demo
from ._benchmark import DEFAULT_BASELINES, SPLIT_KINDS, benchmark, resolve_split
from ._cli import build_parser, main
from ._report import REPORT_METRICS, write_report
from .demo import run_demo

__all__ = [
    "DEFAULT_BASELINES",
    "REPORT_METRICS",
    "SPLIT_KINDS",
    "benchmark",
    "build_parser",
    "demo",
    "main",
    "resolve_split",
    "run_demo",
    "write_report",
]
