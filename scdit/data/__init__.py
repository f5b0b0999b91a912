"""Data layer: validation, representation, vocabularies, datasets and splits."""

from ._dataset import CellDataset, make_loader
from ._representation import (
    clipped_mean_shift,
    counts_to_log1p,
    detect_representation,
    library_size,
    log1p_to_counts,
    to_log1p,
)
from ._setup import condition_labels, get_matrix, validate
from ._vocab import ConditionVocab, CovariateVocab, parse_doses

__all__ = ["CellDataset", "ConditionVocab", "CovariateVocab", "clipped_mean_shift",
           "condition_labels", "counts_to_log1p", "detect_representation", "get_matrix",
           "library_size", "log1p_to_counts", "make_loader", "parse_doses", "to_log1p",
           "validate"]
