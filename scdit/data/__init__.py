"""Data layer: condition labels, validation, representation, vocabularies, datasets and splits.

Everything other packages use from the data layer is imported from here (``from scdit.data
import to_log1p``), never from its private modules.
"""

from ._dataset import CellDataset, dense_tensor, make_loader
from ._labels import COMMON_CONTROL_LABELS, canonical_label, detect_control, preview, split_label
from ._representation import (
    TARGET_SUM,
    Representation,
    clipped_mean_shift,
    counts_to_log1p,
    detect_representation,
    library_size,
    log1p_to_counts,
    to_log1p,
)
from ._setup import SetupInfo, check_values, condition_labels, get_matrix, validate
from ._split_base import LeakageError, Split, check_leakage
from ._splits import (
    random_cells,
    split_combinations,
    split_covariate_context,
    split_dose,
    split_random_cells,
    split_unseen_perturbations,
)
from ._vocab import ConditionVocab, CovariateVocab, parse_doses

__all__ = [
    "COMMON_CONTROL_LABELS",
    "TARGET_SUM",
    "CellDataset",
    "ConditionVocab",
    "CovariateVocab",
    "LeakageError",
    "Representation",
    "SetupInfo",
    "Split",
    "canonical_label",
    "check_leakage",
    "check_values",
    "clipped_mean_shift",
    "condition_labels",
    "counts_to_log1p",
    "dense_tensor",
    "detect_control",
    "detect_representation",
    "get_matrix",
    "library_size",
    "log1p_to_counts",
    "make_loader",
    "parse_doses",
    "preview",
    "random_cells",
    "split_combinations",
    "split_covariate_context",
    "split_dose",
    "split_label",
    "split_random_cells",
    "split_unseen_perturbations",
    "to_log1p",
    "validate",
]
