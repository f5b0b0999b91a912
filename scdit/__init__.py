"""scdit: perturbation-conditioned Diffusion Transformers trained with rectified flow."""

from __future__ import annotations

from importlib import import_module

from . import evaluate as _evaluate_pkg  # noqa: F401  (bind the subpackage before the function)
from ._api import fit, load
from ._model import ScDiT
from .evaluate import benchmark, evaluate

__version__ = "0.1.0"
__all__ = ["ScDiT", "__version__", "benchmark", "datasets", "evaluate", "fit", "load", "pl", "splits"]

_LAZY = {"datasets": "scdit.datasets", "pl": "scdit.plotting", "splits": "scdit.splits"}


def __getattr__(name: str):
    if name in _LAZY:
        return import_module(_LAZY[name])
    raise AttributeError(f"module 'scdit' has no attribute {name!r}")
