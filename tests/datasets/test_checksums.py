"""Checksums of downloads and of the cache: published or recorded at first download, always checked.

Everything runs offline against the local HTTP server of :mod:`tests.datasets.local_server`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings

import pytest

from scdit import datasets as ds
from tests.datasets.local_server import NAME, leftovers

pytest.importorskip("pooch")

FIX = f"scdit.datasets.clear_cache('{NAME}')"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _index(cache) -> dict:
    return json.loads((cache / f"{NAME}.checksums.json").read_text())["files"]


def _fetch_quietly(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return ds.fetch(NAME, cache_dir=cache)


def _flip(path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def recorded(server, card, h5ad_bytes):
    """The test card without a published sha256 (``checksum: recorded``), served at /tiny.h5ad."""
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    return card(sha256=None, checksum="recorded")


def test_first_download_records_and_later_uses_verify(server, recorded, h5ad_bytes, tmp_path):
    with pytest.warns(UserWarning, match=f"sha256 {_sha(h5ad_bytes)} is recorded in") as rec:
        path = ds.fetch(NAME, cache_dir=tmp_path)
    assert "checksum: published" in str(rec[0].message)
    entry = _index(tmp_path)["tiny.h5ad"]
    assert entry["sha256"] == _sha(h5ad_bytes) and entry["size"] == len(h5ad_bytes)
    assert entry["checksum"] == "recorded" and entry["origin"] == "download"
    assert entry["url"].endswith("/tiny.h5ad")
    hits = len(server.hits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified second use is silent
        assert ds.fetch(NAME, cache_dir=tmp_path) == path
        assert ds.load(NAME, cache_dir=tmp_path, offline=True).n_obs == 40
    assert len(server.hits) == hits


def test_tampered_recorded_file_names_the_file_and_the_fix(recorded, h5ad_bytes, tmp_path):
    path = _fetch_quietly(tmp_path)
    _flip(path)
    with pytest.raises(ds.ChecksumError) as err:
        ds.load(NAME, cache_dir=tmp_path, offline=True)
    msg = str(err.value)
    assert str(path) in msg and FIX in msg and "damaged or was changed" in msg
    assert _sha(h5ad_bytes) in msg and "recorded when it was downloaded" in msg
    # the fix works: clear, then a fresh download is recorded again
    removed = ds.clear_cache(NAME, cache_dir=tmp_path)
    assert removed == [tmp_path / NAME, tmp_path / f"{NAME}.checksums.json"]
    assert not (tmp_path / NAME).exists()
    assert _fetch_quietly(tmp_path).read_bytes() == h5ad_bytes


def test_truncated_cache_file_is_reported_with_sizes(recorded, h5ad_bytes, tmp_path):
    path = _fetch_quietly(tmp_path)
    path.write_bytes(h5ad_bytes[:100])
    with pytest.raises(ds.ChecksumError, match="damaged or truncated: it has 100 bytes") as err:
        ds.fetch(NAME, cache_dir=tmp_path, offline=True)
    assert str(path) in str(err.value) and FIX in str(err.value)


def test_unrecorded_truncated_h5ad_gives_a_clear_read_error(recorded, h5ad_bytes, tmp_path):
    # a file copied into the cache by hand (or by an older scdit): recorded now, with a warning
    path = tmp_path / NAME / "tiny.h5ad"
    path.parent.mkdir()
    path.write_bytes(h5ad_bytes[: len(h5ad_bytes) // 2])
    with pytest.warns(UserWarning, match="no checksum was recorded for the cached file"):
        with pytest.raises(ds.DamagedCacheError) as err:
            ds.load(NAME, cache_dir=tmp_path, offline=True)
    msg = str(err.value)
    assert f"the cached file {path} cannot be read as h5ad" in msg and FIX in msg
    assert "truncated" in msg
    assert _index(tmp_path)["tiny.h5ad"]["origin"] == "found in cache"


def test_published_checksum_mismatch_on_cached_file(server, card, h5ad_bytes, tmp_path):
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    card(checksum="published")
    path = ds.fetch(NAME, cache_dir=tmp_path)
    card(sha256="0" * 64, checksum="published")  # the source published a new version
    with pytest.raises(ds.ChecksumError) as err:
        ds.fetch(NAME, cache_dir=tmp_path)
    msg = str(err.value)
    assert "the sha256 the card publishes is " + "0" * 64 in msg
    assert str(path) in msg and FIX in msg


def test_published_checksum_mismatch_on_download_caches_nothing(server, card, tmp_path):
    server.routes["/tiny.h5ad"] = (b"not the published file", "ok")
    card(checksum="published")
    with pytest.raises(ds.ChecksumError, match="checksum mismatch"):
        ds.fetch(NAME, cache_dir=tmp_path)
    assert leftovers(tmp_path) == [] and not (tmp_path / f"{NAME}.checksums.json").exists()


@pytest.mark.parametrize("policy", ["published", "recorded"])
def test_unpacked_file_is_recorded_and_verified(server, card, h5ad_bytes, tmp_path, policy):
    packed = gzip.compress(h5ad_bytes)
    server.routes["/tiny.h5ad"] = (packed, "ok")
    card(sha256=_sha(packed) if policy == "published" else None, compression="gzip",
         checksum=policy)
    path = _fetch_quietly(tmp_path)
    entry = _index(tmp_path)["tiny.h5ad"]
    assert entry["origin"] == "gunzip" and entry["sha256"] == _sha(h5ad_bytes)
    assert entry["download"] == {"file": "tiny.h5ad.gz", "sha256": _sha(packed)}
    assert leftovers(tmp_path) == ["tiny.h5ad"]
    ds.fetch(NAME, cache_dir=tmp_path, offline=True)  # verified, unchanged
    _flip(path, at=len(h5ad_bytes) - 1)
    with pytest.raises(ds.ChecksumError, match="recorded when it was unpacked") as err:
        ds.fetch(NAME, cache_dir=tmp_path, offline=True)
    assert str(path) in str(err.value) and FIX in str(err.value)


def test_download_that_is_not_gzip_is_not_cached(server, card, h5ad_bytes, tmp_path):
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")  # served raw, card says gzip
    card(sha256=None, compression="gzip", checksum="recorded")
    with pytest.raises(ds.DownloadError, match="could not be unpacked with gzip"):
        ds.fetch(NAME, cache_dir=tmp_path)
    assert leftovers(tmp_path) == []


def test_recorded_download_that_is_not_h5ad_is_not_trusted(server, recorded, tmp_path):
    server.routes["/tiny.h5ad"] = (b"<html>Too many requests</html>", "ok")
    with pytest.raises(ds.DownloadError, match=r"not HDF5/h5ad \(it starts with b'<html>"):
        ds.fetch(NAME, cache_dir=tmp_path)
    assert leftovers(tmp_path) == [] and not (tmp_path / f"{NAME}.checksums.json").exists()


def test_damaged_checksum_index_is_named(recorded, tmp_path):
    _fetch_quietly(tmp_path)
    index = tmp_path / f"{NAME}.checksums.json"
    index.write_text('{"files": {"tiny.h5ad": ')
    with pytest.raises(ds.DamagedCacheError) as err:
        ds.fetch(NAME, cache_dir=tmp_path, offline=True)
    assert f"checksum index {index}" in str(err.value) and FIX in str(err.value)


def test_clear_cache_of_everything_keeps_other_files(recorded, tmp_path):
    _fetch_quietly(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert set(ds.clear_cache(cache_dir=tmp_path)) == {
        tmp_path / NAME, tmp_path / f"{NAME}.checksums.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert ds.clear_cache(NAME, cache_dir=tmp_path) == []
    with pytest.raises(KeyError, match="unknown dataset"):
        ds.clear_cache("no_such_dataset", cache_dir=tmp_path)


def test_damaged_bundled_file_is_reported():
    card = ds.get_card("norman19_devel")
    card.update(name="devel_bad_checksum", aliases=[])
    card["source"]["sha256"] = "0" * 64
    ds.register(card)
    try:
        with pytest.raises(ds.ChecksumError, match="bundled file .* is damaged.*Reinstall"):
            ds.load("devel_bad_checksum")
    finally:
        ds.unregister("devel_bad_checksum")
