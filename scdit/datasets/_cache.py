"""Where downloaded datasets live: the cache folder and the offline switch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Environment variable naming the cache folder.
ENV_DATA_DIR = "SCDIT_DATA_DIR"
#: Environment variable that, when truthy (``1``, ``true``, ``yes``), forbids network access.
ENV_OFFLINE = "SCDIT_OFFLINE"


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the dataset cache folder.

    Parameters
    ----------
    path
        Explicit folder. When ``None``, the ``SCDIT_DATA_DIR`` environment variable is used, and
        failing that the operating system's user cache (``pooch.os_cache("scdit")``).

    Returns
    -------
    The folder (not created here).
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("scdit"))


def is_offline(offline: bool | None) -> bool:
    """``offline`` when given, else whether ``SCDIT_OFFLINE`` is truthy (``1``, ``true``, ...)."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def cached_path(card: Mapping[str, Any], cache: str | os.PathLike[str] | None = None) -> Path:
    """Where the (decompressed) file of ``card`` lives in the cache: ``<cache>/<name>/<file>``."""
    return cache_dir(cache) / card["name"] / card["source"]["filename"]


def index_path(card: Mapping[str, Any], cache: str | os.PathLike[str] | None = None) -> Path:
    """Where the checksums recorded for ``card`` live: ``<cache>/<name>.checksums.json``."""
    return cache_dir(cache) / f"{card['name']}.checksums.json"
