"""Condition encoders for perturbations and covariates."""

from ._encoder import ConditionEncoder

__all__ = ["ConditionEncoder"]
