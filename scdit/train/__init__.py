"""Training: Lightning module, EMA, trainer construction, resumable checkpoints, several devices."""

from ._budget import TimeBudget
from ._checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    StepCheckpoint,
    digest,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from ._dist import is_global_zero
from ._ema import EMA
from ._loader import EpochBatchSampler, ResumableLoader, eval_loader
from ._module import FlowModule, group_ids, pair_within_groups
from ._pairs import PairDataset
from ._trainer import (
    COMPILE_MIN_MINUTES,
    COMPILE_MIN_STEPS,
    TrainResult,
    auto_max_steps,
    contexts_lacking_perturbations,
    default_source_noise,
    default_time_sampling,
    resolve_compile,
    resolve_precision,
    resolve_strategy,
    train_field,
)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "COMPILE_MIN_MINUTES",
           "COMPILE_MIN_STEPS", "EMA", "EpochBatchSampler", "FlowModule", "PairDataset",
           "ResumableLoader", "StepCheckpoint", "TimeBudget", "TrainResult", "auto_max_steps",
           "contexts_lacking_perturbations", "default_source_noise",
           "default_time_sampling",
           "digest", "eval_loader", "group_ids", "is_global_zero", "pair_within_groups",
           "read_checkpoint", "resolve_compile", "resolve_precision", "resolve_strategy",
           "rng_state", "set_rng_state", "train_field"]
