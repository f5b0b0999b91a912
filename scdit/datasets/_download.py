"""Downloading registered datasets into a local cache, with checksums and an offline mode."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad

from ._bundled import load_bundled, preprocess_adata, standardise_obs
from ._cache import ENV_DATA_DIR, ENV_OFFLINE, cache_dir, cached_path
from ._cache import is_offline as _offline
from ._registry import get_card

__all__ = [
    "ChecksumError",
    "DatasetNotCachedError",
    "DownloadError",
    "cache_dir",
    "fetch",
    "load",
]


class DownloadError(OSError):
    """A dataset could not be downloaded (network error, truncated transfer, HTTP error)."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded or cached file does not match the sha256 recorded on its card."""


class DatasetNotCachedError(DownloadError, FileNotFoundError):
    """Offline mode is on and the dataset is not in the cache."""


def _downloaded_name(card: Mapping[str, Any]) -> str:
    src = card["source"]
    suffix = ".gz" if src.get("compression", "none") == "gzip" else ""
    return src["filename"] + suffix


def sha256sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256sum(path)
    if actual != expected:
        raise ChecksumError(
            f"{what}: sha256 of {path} is {actual}, but the card records {expected}. The file "
            "is corrupt, truncated or a different version; delete it and download again."
        )


def _gunzip(src: Path, dest: Path) -> None:
    import gzip
    import shutil

    tmp = dest.with_name(dest.name + ".part")
    try:
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progressbar: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Make sure the file of a registered dataset is in the cache and return its path.

    The file is streamed into a temporary name inside the cache folder (by :mod:`pooch`) and only
    moved to its final name once the transfer finished and, when the card records one, the sha256
    matched; a failed or corrupt transfer therefore never leaves a file that looks cached. URLs are
    tried in the order the card lists them.

    Parameters
    ----------
    name
        Card name or alias.
    cache_dir
        Cache folder; see :func:`scdit.datasets.cache_dir` for the default.
    offline
        Forbid network access. ``None`` reads ``SCDIT_OFFLINE``.
    progressbar
        Show a progress bar (needs ``tqdm``).
    timeout
        Seconds to wait for the server between bytes.

    Returns
    -------
    Path of the cached, decompressed file.

    Raises
    ------
    DatasetNotCachedError
        Offline and the file is not cached.
    ChecksumError
        The downloaded (or cached) file does not match the card's sha256.
    DownloadError
        Every URL failed.
    """
    card = get_card(name)
    src = card["source"]
    if card["bundled"]:
        raise ValueError(f"{card['name']!r} is bundled with scdit; use scdit.datasets.load()")
    if card.get("out_of_core", False):
        raise NotImplementedError(_out_of_core_message(card))
    final = cached_path(card, cache_dir)
    if final.exists():
        if src.get("compression", "none") == "none":
            _verify(final, src["sha256"], card["name"])
        return final
    if _offline(offline):
        raise DatasetNotCachedError(
            f"{card['name']!r} is not cached and offline mode is on (offline=True or "
            f"{ENV_OFFLINE}=1). Expected file: {final}. Download it on a connected machine with "
            f"scdit.datasets.fetch({card['name']!r}) and copy the cache folder over, place the "
            f"file from {src['urls'][0] if src['urls'] else src.get('homepage')} at that path, "
            f"or point {ENV_DATA_DIR} at a folder that holds it."
        )
    raw = _download(card, final.parent, progressbar=progressbar, timeout=timeout)
    if raw != final:
        _gunzip(raw, final)
        raw.unlink()
    return final


def _download(card: Mapping[str, Any], folder: Path, *, progressbar: bool, timeout: float) -> Path:
    import pooch
    import requests

    src = card["source"]
    known = f"sha256:{src['sha256']}" if src["sha256"] else None
    fname = _downloaded_name(card)
    downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout)
    errors: list[str] = []
    for url in src["urls"]:
        try:
            path = pooch.retrieve(url, known, fname=fname, path=folder, downloader=downloader)
        except ValueError as exc:  # pooch: hash mismatch (temporary file already removed)
            errors.append(f"{url}: checksum mismatch ({exc})")
        except (requests.exceptions.RequestException, OSError) as exc:
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
        else:
            path = Path(path)
            if known is None:
                warnings.warn(
                    f"{card['name']!r}: the card records no sha256, so the download could not be "
                    f"verified. Its sha256 is {sha256sum(path)}; add it to the card.",
                    UserWarning,
                    stacklevel=3,
                )
            return path
    mismatch = bool(errors) and all(": checksum mismatch (" in e for e in errors)
    cls = ChecksumError if mismatch else DownloadError
    raise cls(
        f"could not download {card['name']!r}; nothing was written to the cache "
        f"({folder}).\n  " + "\n  ".join(errors)
    )


def _out_of_core_message(card: Mapping[str, Any]) -> str:
    src = card["source"]
    return (
        f"{card['name']!r} is a pointer card for an out-of-core dataset "
        f"({card['stats'].get('n_cells') or '?'} cells) that scdit does not download into memory. "
        f"Get it from {src.get('homepage') or src['urls']}: {card.get('notes', '')}".strip()
    )


def load(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    preprocess: bool = False,
    offline: bool | None = None,
    n_top_genes: int | None = None,
    backed: bool = False,
    progressbar: bool = False,
) -> ad.AnnData:
    """Load a registered dataset as AnnData with scdit's standard ``obs`` keys.

    Bundled datasets load from the installed package without network access. Other datasets are
    downloaded once into the cache (see :func:`fetch`) and read from there.

    The returned object always has ``obs["perturbation"]`` (control cells labelled ``"control"``,
    combinations written ``"A+B"``), ``obs["cell_type"]`` when the card maps one, the card's
    covariate columns, and ``uns["scdit_dataset"]`` describing the keys, representation, licence
    and citation. Original columns are kept (a rewritten ``perturbation`` column is saved as
    ``perturbation_original``).

    Parameters
    ----------
    name
        Card name or alias; see :func:`scdit.datasets.list`.
    cache_dir
        Cache folder (argument, then ``SCDIT_DATA_DIR``, then ``pooch.os_cache("scdit")``).
    preprocess
        Apply the card's recipe: ``normalize_total`` to 1e4 and ``log1p`` when the data are
        counts (counts kept in ``layers["counts"]``), then keep the highly variable genes plus
        every perturbation target that is a measured gene.
    offline
        Forbid network access (``None`` reads ``SCDIT_OFFLINE``).
    n_top_genes
        Number of highly variable genes for ``preprocess`` (default: the card's).
    backed
        Open the file read-only in backed mode (large datasets); incompatible with ``preprocess``.
    progressbar
        Show a download progress bar.

    Returns
    -------
    A fresh AnnData object.
    """
    card = get_card(name)
    if backed and preprocess:
        raise ValueError("preprocess=True needs the data in memory; use backed=False")
    if card["bundled"]:
        adata = load_bundled(card)
    else:
        path = fetch(card["name"], cache_dir=cache_dir, offline=offline, progressbar=progressbar)
        adata = ad.read_h5ad(path, backed="r" if backed else None)
    standardise_obs(adata, card)
    if preprocess:
        preprocess_adata(adata, card, n_top_genes=n_top_genes)
    return adata
