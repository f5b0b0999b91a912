"""Condition encoders for perturbations and covariates, and perturbation features."""

from ._encoder import ConditionEncoder
from ._features import (
    check_rows,
    data_features,
    feature_table,
    read_features,
    stand_ins,
    target_prior,
    unknown_message,
)
from ._reliability import MIN_FEATURED, PERMUTATIONS, Z_HIGH, Z_LOW, feature_reliability

__all__ = ["MIN_FEATURED", "PERMUTATIONS", "Z_HIGH", "Z_LOW", "ConditionEncoder", "check_rows", "data_features",
           "feature_reliability", "feature_table", "read_features", "stand_ins", "target_prior",
           "unknown_message"]
