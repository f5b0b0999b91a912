"""Datasets: bundled real screens, a synthetic screen with ground truth, and a registry of
public perturbation datasets that :func:`load` downloads, verifies, caches and standardises.

Every loader returns AnnData with ``obs["perturbation"]`` (``"control"`` for controls,
combinations written ``"A+B"``), the covariate columns named in ``uns["scdit_dataset"]``, and the
original ``obs`` columns untouched.

Examples
--------
>>> from scdit import datasets
>>> adata = datasets.norman19_devel()                 # bundled, offline
>>> sim, truth = datasets.synthetic_perturbation()     # negative-binomial counts + ground truth
>>> table = datasets.list()                            # registry table, offline
>>> adata = datasets.load("norman19", preprocess=True)  # doctest: +SKIP

The last line downloads about 700 MB once into the cache (see :func:`cache_dir`). Every cached
file is checked against its sha256 on each use: the one the card publishes
(``checksum: published``), or the one recorded at the first download (``checksum: recorded``);
:func:`clear_cache` removes a damaged copy.
"""

from ._bundled import glioblastoma_panobinostat, norman19_devel, papalexi21_thp1
from ._download import (
    ChecksumError,
    DamagedCacheError,
    DatasetNotCachedError,
    DownloadError,
    cache_dir,
    clear_cache,
    fetch,
    load,
)
from ._registry import (
    CARD_SCHEMA,
    CardValidationError,
    get_card,
    list_datasets,
    register,
    unregister,
    validate_card,
)
from ._synthetic import SyntheticTruth, synthetic_perturbation

#: Alias of :func:`list_datasets` (``scdit.datasets.list()``). Not in ``__all__`` so that
#: ``from scdit.datasets import *`` never shadows the builtin ``list``.
list = list_datasets  # noqa: A001

__all__ = [
    "CARD_SCHEMA",
    "CardValidationError",
    "ChecksumError",
    "DamagedCacheError",
    "DatasetNotCachedError",
    "DownloadError",
    "SyntheticTruth",
    "cache_dir",
    "clear_cache",
    "fetch",
    "get_card",
    "glioblastoma_panobinostat",
    "list_datasets",
    "load",
    "norman19_devel",
    "papalexi21_thp1",
    "register",
    "synthetic_perturbation",
    "unregister",
    "validate_card",
]
