"""Download path of scdit.datasets against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import warnings

import numpy as np
import pytest

from scdit import datasets as ds
from tests.datasets.local_server import NAME
from tests.datasets.local_server import leftovers as _leftovers

pytest.importorskip("pooch")


def test_download_success_verifies_and_standardises(server, card, h5ad_bytes, tmp_path):
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    adata = ds.load(NAME, cache_dir=tmp_path)
    assert (tmp_path / NAME / "tiny.h5ad").read_bytes() == h5ad_bytes
    assert list(adata.obs["perturbation"].cat.categories) == ["control", "A", "A+B", "B"]
    assert adata.obs["pert"].tolist() == np.repeat(["ctrl", "A", "B", "A_B"], 10).tolist()
    assert adata.obs["cell_type"].tolist() == adata.obs["cell_line"].tolist()
    info = adata.uns["scdit_dataset"]
    assert info["covariate_keys"] == ["cell_line"] and info["control"] == "control"
    # cached: a second load, offline, does not touch the server
    n_hits = len(server.hits)
    again = ds.load(NAME, cache_dir=tmp_path, offline=True)
    assert len(server.hits) == n_hits and again.n_obs == 40


def test_env_cache_dir_and_preprocess(server, card, h5ad_bytes, tmp_path, monkeypatch):
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    monkeypatch.setenv("SCDIT_DATA_DIR", str(tmp_path / "env_cache"))
    assert ds.cache_dir() == tmp_path / "env_cache"
    adata = ds.load(NAME, preprocess=True)
    assert (tmp_path / "env_cache" / NAME / "tiny.h5ad").exists()
    # 3 HVGs plus the measured targets A and B are kept; counts moved to a layer
    assert {"A", "B"} <= set(adata.var_names) and adata.n_vars <= 5
    assert adata.var.loc[["A", "B"], "perturbation_target"].all()
    assert "counts" in adata.layers and adata.uns["scdit_dataset"]["representation"] == "log1p"


def test_unknown_checksum_warns_with_hash(server, card, h5ad_bytes, tmp_path):
    card(sha256=None)
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    with pytest.warns(UserWarning, match=hashlib.sha256(h5ad_bytes).hexdigest()):
        path = ds.fetch(NAME, cache_dir=tmp_path)
    assert path.read_bytes() == h5ad_bytes


def test_checksum_mismatch_is_detected_and_not_cached(server, card, h5ad_bytes, tmp_path):
    corrupt = bytearray(h5ad_bytes)
    corrupt[len(corrupt) // 2] ^= 0xFF
    server.routes["/tiny.h5ad"] = (bytes(corrupt), "ok")
    with pytest.raises(ds.ChecksumError, match="checksum mismatch"):
        ds.load(NAME, cache_dir=tmp_path)
    assert _leftovers(tmp_path) == []
    with pytest.raises(ds.DatasetNotCachedError):
        ds.load(NAME, cache_dir=tmp_path, offline=True)


def test_corrupted_cache_file_is_reported(server, card, h5ad_bytes, tmp_path):
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    path = ds.fetch(NAME, cache_dir=tmp_path)
    path.write_bytes(h5ad_bytes[:100])
    with pytest.raises(ds.ChecksumError, match="delete it and download again"):
        ds.load(NAME, cache_dir=tmp_path, offline=True)


@pytest.mark.parametrize("known", [True, False])
def test_interrupted_download_leaves_nothing(server, card, h5ad_bytes, tmp_path, known):
    if not known:
        card(sha256=None)
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "truncate")
    with pytest.raises(ds.DownloadError, match="nothing was written"):
        ds.fetch(NAME, cache_dir=tmp_path)
    assert _leftovers(tmp_path) == []
    # a later complete transfer succeeds
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unverified download when not known
        assert ds.fetch(NAME, cache_dir=tmp_path).read_bytes() == h5ad_bytes


def test_falls_back_to_mirror(server, card, h5ad_bytes, tmp_path):
    card(urls=[f"{server.url}/missing.h5ad", f"{server.url}/tiny.h5ad"])
    server.routes["/tiny.h5ad"] = (h5ad_bytes, "ok")
    assert ds.fetch(NAME, cache_dir=tmp_path).read_bytes() == h5ad_bytes
    assert server.hits[0].startswith("/missing.h5ad")


def test_gzip_download_is_decompressed(server, card, h5ad_bytes, tmp_path):
    packed = gzip.compress(h5ad_bytes)
    card(sha256=hashlib.sha256(packed).hexdigest(), compression="gzip")
    server.routes["/tiny.h5ad"] = (packed, "ok")
    path = ds.fetch(NAME, cache_dir=tmp_path)
    assert path.name == "tiny.h5ad" and path.read_bytes() == h5ad_bytes
    assert _leftovers(tmp_path) == ["tiny.h5ad"]


@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_error_when_not_cached(server, card, tmp_path, monkeypatch, how):
    kwargs = {"offline": True} if how == "argument" else {}
    if how == "env":
        monkeypatch.setenv("SCDIT_OFFLINE", "1")
    with pytest.raises(ds.DatasetNotCachedError, match="offline mode is on") as err:
        ds.load(NAME, cache_dir=tmp_path, **kwargs)
    assert str(tmp_path / NAME / "tiny.h5ad") in str(err.value)
    assert server.hits == []


def test_bundled_and_pointer_cards_never_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SCDIT_OFFLINE", "1")
    assert ds.load("norman19_devel", cache_dir=tmp_path).n_obs == 5961
    with pytest.raises(ValueError, match="bundled"):
        ds.fetch("norman19_devel", cache_dir=tmp_path)
    with pytest.raises(NotImplementedError, match="out-of-core"):
        ds.load("tahoe100m", cache_dir=tmp_path)
