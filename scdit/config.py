"""Configuration dataclasses of a model (frozen, JSON round-trip): ``scdit.DataConfig``, ...

:class:`ScDiTConfig` holds one of each section; :data:`DIT_PRESETS` maps a preset name
(``"tiny"``, ``"small"``, ``"base"``, ``"large"``) to its :class:`DiTConfig`.
"""

from ._config import (
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

__all__ = [
    "DIT_PRESETS",
    "ConditionConfig",
    "DataConfig",
    "DiTConfig",
    "FlowConfig",
    "SamplingConfig",
    "ScDiTConfig",
    "TokenizerConfig",
    "TrainConfig",
]
