"""Checksums of cached dataset files: published on the card, or recorded at the first download.

Every downloadable card says where the sha256 of its file comes from (``source.checksum``):

``published``
    The card holds the sha256 that the source publishes (``source.sha256``); the download is
    checked against it before it is moved into the cache, and the cached file on every later use.
``recorded``
    The source publishes no sha256 we can use. The first download is trusted (trust on first use)
    and its sha256 is recorded in the cache's index ``<cache>/<name>.checksums.json``; every later
    use is checked against that record.

Unpacked files (``compression: gzip``) always get their own recorded sha256 at unpacking, which
every later use checks. A file that fails the check raises :class:`ChecksumError` naming the file
and how to clear it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._errors import ChecksumError, DamagedCacheError

__all__ = [
    "checksum_policy",
    "clear_hint",
    "read_index",
    "record_entry",
    "sha256sum",
    "verify_cached",
]

def sha256sum(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks.

    Parameters
    ----------
    path
        The file.
    chunk_size
        Bytes read at a time.

    Returns
    -------
    The 64-character lower-case hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_policy(card: Mapping[str, Any]) -> str:
    """``"published"`` or ``"recorded"``: the card's ``source.checksum``.

    A card without the field (e.g. registered by an older script) is ``published`` when it holds a
    ``sha256`` and ``recorded`` otherwise.
    """
    src = card["source"]
    return src.get("checksum") or ("published" if src.get("sha256") else "recorded")


def clear_hint(name: str, path: Path) -> str:
    """The sentence telling the user how to clear the damaged cached file ``path`` of ``name``."""
    return (
        f"To fix it, delete it and download again: run scdit.datasets.clear_cache({name!r}) "
        f"(or delete {path} by hand); the next scdit.datasets.load({name!r}) downloads a fresh "
        "copy."
    )


def read_index(path: Path, name: str) -> dict[str, dict[str, Any]]:
    """The entries of a dataset's checksum index ``path`` (``{}`` when there is none).

    Raises
    ------
    DamagedCacheError
        The index exists but is not a JSON object of entries.
    """
    if not path.exists():
        return {}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        files = index["files"]
        if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()
        ):
            raise TypeError("'files' must map file names to entries with a 'sha256'")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedCacheError(
            f"{name!r}: the checksum index {path} of the cache is damaged "
            f"({type(exc).__name__}: {exc}), so the cached files cannot be verified. "
            + clear_hint(name, path)
        ) from exc
    return files


def record_entry(index: Path, name: str, filename: str, entry: Mapping[str, Any]) -> Path:
    """Add or replace the entry of ``filename`` in the index (written atomically).

    Parameters
    ----------
    index
        The dataset's checksum index (``<cache>/<name>.checksums.json``).
    name
        Card name (for messages).
    filename
        Cached file the entry describes.
    entry
        At least ``sha256`` and ``size``; ``recorded_at`` (UTC) is added.

    Returns
    -------
    Path of the index.
    """
    files = read_index(index, name)
    files[filename] = {
        **entry,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = index.with_name(f"{index.name}.{os.getpid()}.part")
    payload = {"format": 1, "dataset": name, "files": files}
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, index)
    return index


def verify_cached(card: Mapping[str, Any], path: Path, index: Path) -> None:
    """Check a cached file against its published or recorded sha256.

    Parameters
    ----------
    card
        The dataset's card.
    path
        The cached (decompressed) file.
    index
        The dataset's checksum index.

    Raises
    ------
    ChecksumError
        Its size or sha256 differs from the expected one; the message names the file, the
        expected and actual values, and how to clear the cache.
    DamagedCacheError
        The checksum index is unreadable.

    Warns
    -----
    UserWarning
        When no checksum was recorded for the file (placed by hand or cached by an older scdit):
        its sha256 is recorded now and checked on every later use.
    """
    name, src = card["name"], card["source"]
    if checksum_policy(card) == "published" and src.get("compression", "none") == "none":
        expected, size, origin = src["sha256"], None, "the sha256 the card publishes"
    else:
        entry = read_index(index, name).get(path.name)
        if entry is None:
            _record_unknown(card, path, index)
            return
        expected, size = entry["sha256"], entry.get("size")
        when = "unpacked" if entry.get("origin") == "gunzip" else "downloaded"
        origin = (
            f"the sha256 recorded when it was {when} ({entry.get('recorded_at', '?')}, in "
            f"{index})"
        )
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{name!r}: the cached file {path} is damaged or truncated: it has {actual_size} "
            f"bytes, but {size} were recorded with {origin}. " + clear_hint(name, path)
        )
    actual = sha256sum(path)
    if actual != expected:
        raise ChecksumError(
            f"{name!r}: the cached file {path} is damaged or was changed: its sha256 is {actual}, "
            f"but {origin} is {expected}. " + clear_hint(name, path)
        )


def _record_unknown(card: Mapping[str, Any], path: Path, index: Path) -> None:
    name = card["name"]
    digest = sha256sum(path)
    record_entry(
        index,
        name,
        path.name,
        {"sha256": digest, "size": path.stat().st_size, "origin": "found in cache"},
    )
    warnings.warn(
        f"{name!r}: no checksum was recorded for the cached file {path} (placed there by hand or "
        f"by an older scdit). Its sha256 {digest} is recorded now in {index} and checked on "
        f"every later use; if you are unsure of the file, "
        f"scdit.datasets.clear_cache({name!r}) and load again to download a fresh copy.",
        UserWarning,
        stacklevel=4,
    )
