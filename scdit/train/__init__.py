"""Training: Lightning module, EMA, trainer construction."""

from ._budget import TimeBudget
from ._ema import EMA
from ._module import FlowModule, group_ids, pair_within_groups
from ._trainer import TrainResult, auto_max_steps, resolve_precision, train_field

__all__ = ["EMA", "FlowModule", "TimeBudget", "TrainResult", "auto_max_steps", "group_ids",
           "pair_within_groups", "resolve_precision", "train_field"]
