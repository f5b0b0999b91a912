"""Configuration dataclasses of a model (frozen, JSON round-trip): ``scdit.DataConfig``, ...

:class:`ScDiTConfig` holds one of each section; :data:`DIT_PRESETS` maps a preset name
(``"tiny"``, ``"small"``, ``"base"``, ``"large"``) to its :class:`DiTConfig`.
:func:`config_schema` is the JSON Schema :meth:`ScDiTConfig.from_dict` checks (plausible sizes in
:data:`SIZE_LIMITS`); :func:`check_json` validates a stored JSON document with readable errors.
"""

from ._config import (
    DIT_PRESETS,
    SIZE_LIMITS,
    ConditionConfig,
    DataConfig,
    DiTConfig,
    FlowConfig,
    SamplingConfig,
    ScDiTConfig,
    TokenizerConfig,
    TrainConfig,
    config_schema,
)
from ._schema import check_json

__all__ = [
    "DIT_PRESETS",
    "SIZE_LIMITS",
    "ConditionConfig",
    "DataConfig",
    "DiTConfig",
    "FlowConfig",
    "SamplingConfig",
    "ScDiTConfig",
    "TokenizerConfig",
    "TrainConfig",
    "check_json",
    "config_schema",
]
