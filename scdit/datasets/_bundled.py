"""Small real datasets shipped with scdit, and the obs standardisation shared by every loader."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import resources
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import split_label
from ._checksums import sha256sum
from ._errors import ChecksumError

__all__ = [
    "CONTROL",
    "glioblastoma_panobinostat",
    "norman19_devel",
    "papalexi21_thp1",
    "perturbation_targets",
    "preprocess_adata",
    "standardise_obs",
]

#: Standard label of control cells in ``obs["perturbation"]``.
CONTROL = "control"
#: Standard separator of combinatorial perturbations.
COMBO_SEP = "+"
_GENETIC = {"CRISPRi", "CRISPRa", "CRISPR-KO"}


def load_bundled(card: Mapping[str, Any]) -> ad.AnnData:
    """Read a bundled card's h5ad from the installed package (a fresh object on every call).

    The file is checked against the sha256 on its card first (a few milliseconds).

    Raises
    ------
    ChecksumError
        The installed file is damaged; reinstall scdit.
    """
    res = resources.files("scdit.datasets").joinpath("_data", card["source"]["filename"])
    with resources.as_file(res) as path:
        expected = card["source"]["sha256"]
        if expected is not None and (actual := sha256sum(path)) != expected:
            raise ChecksumError(
                f"{card['name']!r}: the bundled file {path} is damaged: its sha256 is {actual}, "
                f"but the card publishes {expected}. Reinstall scdit "
                "(pip install --force-reinstall scdit) to restore it."
            )
        return ad.read_h5ad(path)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def standardise_obs(adata: ad.AnnData, card: Mapping[str, Any]) -> ad.AnnData:
    """Add scdit's standard ``obs`` keys to ``adata`` in place, following the card's mapping.

    - ``obs["perturbation"]``: the card's condition column with its control label(s) replaced by
      ``"control"`` and its combination separator by ``"+"``; categorical, ``control`` first. If the
      source column was already called ``perturbation`` and any label changed, the original is kept
      as ``obs["perturbation_original"]``.
    - ``obs["cell_type"]`` / ``obs["dose"]``: copied from the mapped columns when those have other
      names and the standard column does not exist yet.
    - ``uns["scdit_dataset"]``: name, keys, control label, representation, licence and citation.

    Covariate columns named on the card but absent from ``obs`` are dropped with a warning.

    Parameters
    ----------
    adata
        Data to modify.
    card
        Parsed dataset card.

    Returns
    -------
    The same object, for chaining.
    """
    m = card["obs_mapping"]
    obs = adata.obs
    key = m["condition"]
    if key not in obs.columns:
        raise KeyError(
            f"{card['name']!r}: condition column {key!r} not in obs (columns: {list(obs.columns)})."
            " The file may be a different version than the card describes."
        )
    original = obs[key].astype(str)
    is_control = original.isin(_as_list(m["control"])).to_numpy()
    if not is_control.any():
        warnings.warn(
            f"{card['name']!r}: no cell carries control label {m['control']!r}",
            UserWarning,
            stacklevel=2,
        )
    labels = original.copy()
    sep = m.get("combination_separator")
    if sep and sep != COMBO_SEP:
        labels = labels.str.replace(sep, COMBO_SEP, regex=False)
    labels[is_control] = CONTROL
    if key == "perturbation" and not labels.equals(original):
        obs["perturbation_original"] = obs[key].copy()
    cats = [CONTROL] + sorted(set(labels[~is_control]))
    obs["perturbation"] = pd.Categorical(labels, categories=cats if is_control.any() else cats[1:])
    for std in ("cell_type", "dose"):
        src = m.get(std)
        if src and src != std and std not in obs.columns:
            if src in obs.columns:
                obs[std] = obs[src].copy()
            else:
                warnings.warn(
                    f"{card['name']!r}: {std} column {src!r} not in obs", UserWarning, stacklevel=2
                )
    covariates = [c for c in m["covariates"] if c in obs.columns]
    for c in set(m["covariates"]) - set(covariates):
        warnings.warn(
            f"{card['name']!r}: covariate {c!r} not in obs; ignored", UserWarning, stacklevel=2
        )
    info = {
        "name": card["name"],
        "title": card["title"],
        "condition_key": "perturbation",
        "source_condition_key": key,
        "control": CONTROL,
        "combination_separator": COMBO_SEP,
        "covariate_keys": covariates,
        "cell_type_key": "cell_type" if "cell_type" in obs.columns else None,
        "dose_key": "dose" if m.get("dose") and "dose" in obs.columns else None,
        "gene_symbols_key": m.get("var_symbols"),
        "perturbation_type": list(card["perturbation_type"]),
        "representation": card["representation"],
        "license": card["license"],
        "citation": card["citation"]["text"],
        "doi": card["citation"]["doi"],
    }
    # h5ad cannot store None: leave unset entries out.
    adata.uns["scdit_dataset"] = {k: v for k, v in info.items() if v is not None}
    return adata


def perturbation_targets(adata: ad.AnnData, card: Mapping[str, Any]) -> list[str]:
    """Measured genes (``var_names``) that are targets of the genetic perturbations in ``adata``.

    Labels of ``obs["perturbation"]`` are split on ``"+"`` and matched against ``var_names`` and,
    when the card names one, the gene-symbol column of ``var``. Chemical screens return ``[]``.
    """
    if not _GENETIC & set(card["perturbation_type"]):
        return []
    genes = {g for p in adata.obs["perturbation"].cat.categories
             for g in split_label(p, CONTROL, COMBO_SEP)}
    names = pd.Index(adata.var_names.astype(str))
    hit = names.isin(genes)
    col = card["obs_mapping"].get("var_symbols")
    if col and col in adata.var.columns:
        hit |= adata.var[col].astype(str).isin(genes).to_numpy()
    return list(names[hit])


def _is_counts(X: Any) -> bool:
    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    vals = vals[:100_000]
    return bool(vals.size == 0 or (np.all(vals >= 0) and np.allclose(vals, np.round(vals))))


def preprocess_adata(
    adata: ad.AnnData, card: Mapping[str, Any], *, n_top_genes: int | None = None
) -> ad.AnnData:
    """Apply a card's preprocessing recipe in place (gene subsetting returns a new object).

    Counts are normalised to ``normalize_total`` per cell and ``log1p``-transformed (the counts
    are kept in ``layers["counts"]``); data already in log1p are left as they are. Then the
    ``n_top_genes`` highly variable genes (scanpy ``flavor="seurat"``) are kept, together with
    every measured perturbation target when ``keep_perturbation_targets`` is set.
    ``var["perturbation_target"]`` flags the targets.

    Parameters
    ----------
    adata
        Standardised data (see :func:`standardise_obs`).
    card
        Parsed dataset card.
    n_top_genes
        Overrides the card's number of highly variable genes; ``None`` keeps the card's value.

    Returns
    -------
    The preprocessed AnnData (``adata`` itself when no gene is removed).
    """
    import scanpy as sc

    recipe = card["preprocessing"]
    if _is_counts(adata.X):
        adata.layers["counts"] = adata.X.copy()
        if recipe["normalize_total"]:
            sc.pp.normalize_total(adata, target_sum=float(recipe["normalize_total"]))
        if recipe["log1p"]:
            sc.pp.log1p(adata)
    adata.uns["scdit_dataset"]["representation"] = "log1p"
    targets = set(perturbation_targets(adata, card))
    adata.var["perturbation_target"] = adata.var_names.isin(targets)
    n_top = n_top_genes if n_top_genes is not None else recipe["n_top_genes"]
    if n_top is None or n_top >= adata.n_vars:
        return adata
    sc.pp.highly_variable_genes(adata, n_top_genes=int(n_top), flavor="seurat")
    keep = adata.var["highly_variable"].to_numpy().copy()
    if recipe["keep_perturbation_targets"]:
        keep |= adata.var["perturbation_target"].to_numpy()
    if keep.all():
        return adata
    return adata[:, keep].copy()


def _load(name: str) -> ad.AnnData:
    from ._registry import get_card

    card = get_card(name)
    return standardise_obs(load_bundled(card), card)


def norman19_devel() -> ad.AnnData:
    """Norman 2019 + McFaline-Figueroa 2023 development subset (bundled, offline, 1.1 MB).

    5,961 cells × 500 highly variable genes from the PerturBench development split: K562 CRISPRa
    (Norman et al. 2019; 18 single and 15 double perturbations, ~100 cells each, 100 controls) and
    three glioblastoma lines A172, T98G, U87MG with CRISPRi (McFaline-Figueroa et al. 2023;
    9 perturbations shared across lines, 100 controls per line). ``.X`` is log1p-normalised; there
    are no raw counts (``obs["ncounts"]`` holds library sizes).

    Standard keys: ``obs["perturbation"]`` (``control``; doubles ``A+B``), ``obs["cell_type"]``
    (``k562``, ``A172``, ``T98G``, ``U87MG``; the covariate). All original columns are kept.
    ``uns["scdit_dataset"]`` records the keys, representation (``log1p``), licence (BSD-3-Clause,
    Altos Labs) and citation.

    Returns
    -------
    A fresh AnnData object on every call.
    """
    return _load("norman19_devel")


def glioblastoma_panobinostat() -> ad.AnnData:
    """Glioblastoma slice cultures treated with panobinostat or DMSO (bundled, offline, 3.6 MB).

    5,000 cells × 300 genes from the example data of the lemur package (Zhao et al. 2021, acute
    slice cultures of 5 patients' tumours). ``.X`` holds raw integer counts, ``layers["logcounts"]``
    a log normalisation; ``var_names`` are Ensembl IDs with symbols in ``var["symbol"]``.

    Standard keys: ``obs["perturbation"]`` is ``control`` (the original ``obs["condition"]``
    value ``ctrl``, DMSO vehicle) or ``panobinostat``; the original ``condition`` column is kept
    unchanged. The covariate is ``obs["patient_id"]`` (5 patients × 1,000 cells), so a patient's
    treated cells can be held out and predicted from its control cells. There is no cell-type
    annotation. ``uns["scdit_dataset"]`` records representation ``counts``, licence (MIT) and
    citation.

    Returns
    -------
    A fresh AnnData object on every call.
    """
    return _load("glioblastoma_panobinostat")


def papalexi21_thp1() -> ad.AnnData:
    """THP-1 CRISPR knock-out screen of immune-checkpoint regulators (bundled, offline, 3.2 MB).

    20,729 cells × 299 genes, raw UMI counts (~200 per cell), from the low-MOI example data of
    the sceptredata R package (Papalexi et al. 2021): 25 targeted genes and non-targeting
    controls. Nine targets (CMTM6, IFNGR2, JAK2, NFKBIA, STAT1, STAT2, STAT3, TNFRSF14,
    UBE2L6) are measured genes, so held-out knock-outs can be predicted from data-derived
    features of their targets (``scdit.fit``'s default for such screens).

    Standard keys: ``obs["perturbation"]`` is the target of each cell's most-expressed gRNA
    (``obs["grna"]``, with its UMI count ``obs["grna_umi"]``), ``control`` for non-targeting
    gRNAs; ``obs["bio_rep"]`` is the biological replicate. Cells that escaped the knock-out are
    not filtered. ``uns["scdit_dataset"]`` records representation ``counts``, licence (MIT) and
    citation.

    Returns
    -------
    A fresh AnnData object on every call.
    """
    return _load("papalexi21_thp1_lowmoi")
