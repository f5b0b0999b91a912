"""Data layer: condition labels, validation, representation, vocabularies, datasets and splits.

Everything other packages use from the data layer is imported from here (``from scdit.data
import to_log1p``), never from its private modules.
"""

from ._dataset import CellDataset, dense_tensor, make_loader
from ._labels import (
    COMMON_CONTROL_LABELS,
    canonical_label,
    check_labels,
    control_like,
    detect_control,
    label_problem,
    label_rules,
    preview,
    split_label,
)
from ._ondisk import CellStore, open_cells
from ._ondisk_stats import GeneStats, dispersion_top, gene_stats, select_hvg
from ._representation import (
    FOLD_MAX,
    TARGET_SUM,
    Representation,
    clipped_mean_shift,
    counts_to_log1p,
    detect_representation,
    library_size,
    log1p_to_counts,
    mean_fold_change,
    mean_fold_or_shift,
    renormalise_log1p,
    to_log1p,
)
from ._rounding import matched_round_up
from ._setup import (
    LOG1P_MAX,
    LOG1P_WARN,
    SetupInfo,
    check_expression,
    check_values,
    condition_labels,
    covariate_keys_arg,
    get_matrix,
    validate,
)
from ._split_base import LeakageError, Split, check_leakage
from ._splits import (
    random_cells,
    split_combinations,
    split_covariate_context,
    split_dose,
    split_random_cells,
    split_unseen_perturbations,
)
from ._stream import StreamedCells
from ._stream_train import StreamedTrainingSet, StreamLoader
from ._vocab import ConditionVocab, CovariateVocab, parse_doses

__all__ = [
    "COMMON_CONTROL_LABELS",
    "FOLD_MAX",
    "LOG1P_MAX",
    "LOG1P_WARN",
    "TARGET_SUM",
    "CellDataset",
    "CellStore",
    "ConditionVocab",
    "CovariateVocab",
    "GeneStats",
    "LeakageError",
    "Representation",
    "SetupInfo",
    "Split",
    "StreamedCells",
    "StreamedTrainingSet",
    "StreamLoader",
    "canonical_label",
    "check_expression",
    "check_labels",
    "check_leakage",
    "check_values",
    "clipped_mean_shift",
    "condition_labels",
    "control_like",
    "counts_to_log1p",
    "covariate_keys_arg",
    "dense_tensor",
    "detect_control",
    "detect_representation",
    "dispersion_top",
    "gene_stats",
    "get_matrix",
    "label_problem",
    "label_rules",
    "library_size",
    "log1p_to_counts",
    "make_loader",
    "matched_round_up",
    "mean_fold_change",
    "mean_fold_or_shift",
    "open_cells",
    "parse_doses",
    "preview",
    "random_cells",
    "renormalise_log1p",
    "select_hvg",
    "split_combinations",
    "split_covariate_context",
    "split_dose",
    "split_label",
    "split_random_cells",
    "split_unseen_perturbations",
    "to_log1p",
    "validate",
]
