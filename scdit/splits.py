"""Train/test splits with an automatic leakage check (implemented in :mod:`scdit.data`)."""

from .data import (
    LeakageError,
    Split,
    check_leakage,
    random_cells,
    split_combinations,
    split_covariate_context,
    split_dose,
    split_random_cells,
    split_unseen_perturbations,
)

__all__ = [
    "LeakageError",
    "Split",
    "check_leakage",
    "random_cells",
    "split_combinations",
    "split_covariate_context",
    "split_dose",
    "split_random_cells",
    "split_unseen_perturbations",
]
