"""Exceptions of the dataset downloader and cache."""

from __future__ import annotations

__all__ = ["ChecksumError", "DamagedCacheError", "DatasetNotCachedError", "DownloadError"]


class DownloadError(OSError):
    """A dataset could not be downloaded (network error, truncated transfer, HTTP error)."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded or cached file does not match its sha256.

    The expected sha256 is the one the card publishes (``checksum: published``) or the one scdit
    recorded in the cache at the first download (``checksum: recorded``). The message names the
    file and how to clear it (:func:`scdit.datasets.clear_cache`).
    """


class DamagedCacheError(DownloadError, ValueError):
    """A cached file (a dataset or the cache's checksum index) exists but cannot be read.

    The message names the file and how to clear it (:func:`scdit.datasets.clear_cache`).
    """


class DatasetNotCachedError(DownloadError, FileNotFoundError):
    """Offline mode is on and the dataset is not in the cache."""
