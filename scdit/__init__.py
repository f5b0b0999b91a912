"""scdit: perturbation-conditioned Diffusion Transformers trained with rectified flow."""

from __future__ import annotations

from importlib import import_module

from . import evaluate  # a callable module: scdit.evaluate(...) and scdit.evaluate.summarize
from .api import fit, load, reflow
from .config import (
    DIT_PRESETS,
    ConditionConfig,
    DataConfig,
    DiTConfig,
    FlowConfig,
    SamplingConfig,
    ScDiTConfig,
    TokenizerConfig,
    TrainConfig,
)
from .effects import EffectConfig
from .model import ScDiT
from .pipelines import benchmark, write_report
from .version import __version__

__all__ = [
    "DIT_PRESETS",
    "ConditionConfig",
    "DataConfig",
    "DiTConfig",
    "EffectConfig",
    "FlowConfig",
    "SamplingConfig",
    "ScDiT",
    "ScDiTConfig",
    "TokenizerConfig",
    "TrainConfig",
    "__version__",
    "benchmark",
    "datasets",
    "evaluate",
    "fit",
    "load",
    "pl",
    "reflow",
    "splits",
    "write_report",
]

_LAZY = {"datasets": "scdit.datasets", "pl": "scdit.plotting", "splits": "scdit.splits"}


def __getattr__(name: str):
    if name in _LAZY:
        return import_module(_LAZY[name])
    raise AttributeError(f"module 'scdit' has no attribute {name!r}")
