"""Downloading registered datasets into a local cache, with checksums and an offline mode.

Checksum policy (the card's ``source.checksum``; see :mod:`._checksums`): a ``published`` sha256
is checked before a download is moved into the cache and on every later use; without one the
sha256 is ``recorded`` in ``<cache>/<name>.checksums.json`` at the first download and checked on
every later use. Unpacked (gunzipped) files get their own recorded sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad

from ._bundled import load_bundled, preprocess_adata, standardise_obs
from ._cache import ENV_DATA_DIR, ENV_OFFLINE, cache_dir, cached_path, index_path
from ._cache import is_offline as _offline
from ._checksums import (
    checksum_policy,
    clear_hint,
    record_entry,
    sha256sum,
    verify_cached,
)
from ._errors import ChecksumError, DamagedCacheError, DatasetNotCachedError, DownloadError
from ._registry import _all_cards, get_card

__all__ = [
    "ChecksumError",
    "DamagedCacheError",
    "DatasetNotCachedError",
    "DownloadError",
    "cache_dir",
    "clear_cache",
    "fetch",
    "load",
]


def _downloaded_name(card: Mapping[str, Any]) -> str:
    src = card["source"]
    suffix = ".gz" if src.get("compression", "none") == "gzip" else ""
    return src["filename"] + suffix


def _gunzip(src: Path, dest: Path, name: str) -> str:
    """Unpack ``src`` into ``dest`` (atomically) and return the sha256 of the unpacked bytes."""
    import gzip

    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(1 << 20):
                digest.update(chunk)
                fout.write(chunk)
        _check_format(tmp, dest.name, name)
        os.replace(tmp, dest)
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(
            f"{name!r}: the download {src} could not be unpacked with gzip "
            f"({type(exc).__name__}: {exc}); nothing was cached. Load it again to download a "
            "fresh copy."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def _check_format(path: Path, filename: str, name: str) -> None:
    """Refuse to cache an unverified file that is not HDF5 (e.g. a server's HTML error page)."""
    if not filename.endswith(".h5ad"):
        return
    import h5py

    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(60)
        raise DownloadError(
            f"{name!r}: the server sent a file that is not HDF5/h5ad (it starts with {head!r}); "
            "nothing was cached. Check the card's URLs (a login or error page?) and try again."
        )


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progressbar: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Make sure the file of a registered dataset is in the cache, verified, and return its path.

    The file is streamed into a temporary name inside the cache folder (by :mod:`pooch`) and only
    moved to its final name once the transfer finished and, for a ``checksum: published`` card,
    its sha256 matched the card; a failed or corrupt transfer therefore never leaves a file that
    looks cached. URLs are tried in the order the card lists them.

    Checksums: a ``recorded`` card's first download is trusted, its sha256 is recorded in
    ``<cache>/<name>.checksums.json`` and a warning shows it; an unpacked (gzip) file's sha256 is
    recorded when it is unpacked. A cached file is checked against the published or recorded
    sha256 every time it is fetched (reading it once: about a second per GB).

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
    Path of the cached, decompressed, verified file.

    Raises
    ------
    DatasetNotCachedError
        Offline and the file is not cached.
    ChecksumError
        The download does not match the published sha256, or the cached file does not match its
        published or recorded sha256 (the message says how to clear it).
    DamagedCacheError
        The cache's checksum index is unreadable.
    DownloadError
        Every URL failed, or the server sent something that is not the expected file.
    """
    card = get_card(name)
    src = card["source"]
    if card["bundled"]:
        raise ValueError(f"{card['name']!r} is bundled with scdit; use scdit.datasets.load()")
    if card.get("out_of_core", False):
        raise NotImplementedError(_out_of_core_message(card))
    final = cached_path(card, cache_dir)
    index = index_path(card, cache_dir)
    if final.exists():
        verify_cached(card, final, index)
        return final
    if _offline(offline):
        raise DatasetNotCachedError(
            f"{card['name']!r} is not cached and offline mode is on (offline=True or "
            f"{ENV_OFFLINE}=1). Expected file: {final}. Download it on a connected machine with "
            f"scdit.datasets.fetch({card['name']!r}) and copy the cache folder over, place the "
            f"file from {src['urls'][0] if src['urls'] else src.get('homepage')} at that path, "
            f"or point {ENV_DATA_DIR} at a folder that holds it."
        )
    raw, url = _download(card, final.parent, progressbar=progressbar, timeout=timeout)
    _store(card, raw, final, url, index)
    return final


def _store(card: Mapping[str, Any], raw: Path, final: Path, url: str, index: Path) -> None:
    """Unpack ``raw`` if needed and record the sha256 of what is cached in the index."""
    name, policy = card["name"], checksum_policy(card)
    published = policy == "published"
    try:
        raw_digest = card["source"]["sha256"] if published else sha256sum(raw)
        entry: dict[str, Any] = {"checksum": policy, "url": url}
        if raw != final:
            entry["download"] = {"file": raw.name, "sha256": raw_digest}
            digest = _gunzip(raw, final, name)
            entry.update(sha256=digest, origin="gunzip")
        else:
            if not published:
                _check_format(raw, final.name, name)
            entry.update(sha256=raw_digest, origin="download")
        entry["size"] = final.stat().st_size
        record_entry(index, name, final.name, entry)
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    finally:
        if raw != final:
            raw.unlink(missing_ok=True)
    if not published:
        warnings.warn(
            f"{name!r}: the card publishes no sha256 (checksum: recorded), so this first "
            f"download from {url} was trusted as it is. Its sha256 {raw_digest} is recorded in "
            f"{index} and every later use of the cached file is checked against it. To publish "
            f"it, set `sha256: {raw_digest}` and `checksum: published` on the card.",
            UserWarning,
            stacklevel=3,
        )


def _download(
    card: Mapping[str, Any], folder: Path, *, progressbar: bool, timeout: float
) -> tuple[Path, str]:
    import pooch
    import requests

    src = card["source"]
    known = f"sha256:{src['sha256']}" if checksum_policy(card) == "published" else None
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
            return Path(path), url
    mismatch = bool(errors) and all(": checksum mismatch (" in e for e in errors)
    cls = ChecksumError if mismatch else DownloadError
    raise cls(
        f"could not download {card['name']!r}; nothing was written to the cache "
        f"({folder}).\n  " + "\n  ".join(errors)
    )


def clear_cache(
    name: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Delete the cached files of a dataset (or of every registered dataset).

    Use it when a cached file is damaged (:class:`ChecksumError`, :class:`DamagedCacheError`):
    the next :func:`load` downloads a fresh copy and records its checksum again.

    Parameters
    ----------
    name
        Card name or alias. ``None`` clears the folders of every registered downloadable
        dataset (other files in the cache folder are left alone).
    cache_dir
        Cache folder; see :func:`scdit.datasets.cache_dir` for the default.

    Returns
    -------
    What was removed: the folder ``<cache>/<name>`` and the recorded checksums
    ``<cache>/<name>.checksums.json``; empty when nothing was cached.
    """
    if name is None:
        cards = [c for c in _all_cards().values() if not c["bundled"]]
    else:
        cards = [get_card(name)]
    removed = []
    for card in cards:
        folder, index = cached_path(card, cache_dir).parent, index_path(card, cache_dir)
        if folder.is_dir():
            shutil.rmtree(folder)
            removed.append(folder)
        if index.exists():
            index.unlink()
            removed.append(index)
    return removed


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

    Raises
    ------
    ChecksumError
        A cached file does not match its published or recorded sha256.
    DamagedCacheError
        The cached file cannot be read (truncated, damaged or not h5ad).
    """
    card = get_card(name)
    if backed and preprocess:
        raise ValueError("preprocess=True needs the data in memory; use backed=False")
    if card["bundled"]:
        adata = load_bundled(card)
    else:
        path = fetch(card["name"], cache_dir=cache_dir, offline=offline, progressbar=progressbar)
        adata = _read_cached(card, path, backed=backed)
    standardise_obs(adata, card)
    if preprocess:
        preprocess_adata(adata, card, n_top_genes=n_top_genes)
    return adata


def _read_cached(card: Mapping[str, Any], path: Path, *, backed: bool) -> ad.AnnData:
    """Read a cached h5ad, naming the file and the way to clear it when it is unreadable."""
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DamagedCacheError(
            f"{card['name']!r}: the cached file {path} cannot be read as h5ad "
            f"({type(exc).__name__}: {exc}); it is truncated, damaged or not an h5ad file. "
            + clear_hint(card["name"], path)
        ) from exc
