"""A local HTTP server on 127.0.0.1 and a registered test card, for the download tests.

The fixtures (``server``, ``h5ad_bytes``, ``card``) are made available to the tests of this
folder by ``conftest.py``; the helpers (``NAME``, ``leftovers``) are imported from here.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scdit import datasets as ds

NAME = "scdit_test_local"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (payload, mode)``; mode ``"truncate"`` stops half-way."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        payload, mode = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("SCDIT_OFFLINE", raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def h5ad_bytes(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    labels = np.repeat(["ctrl", "A", "B", "A_B"], 10)
    obs = pd.DataFrame(
        {"pert": labels, "cell_line": np.tile(["x", "y"], 20)},
        index=[f"c{i}" for i in range(40)],
    )
    var = pd.DataFrame(index=["A", "B", "C", "D", "E"])
    X = sp.csr_matrix(rng.poisson(5, (40, 5)).astype(np.float32))
    path = tmp_path_factory.mktemp("src") / "tiny.h5ad"
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(path)
    return path.read_bytes()


def make_card(
    urls: list[str], sha256: str | None, compression: str = "none", checksum: str | None = None
) -> dict:
    """A card for the test server; ``checksum`` (published/recorded) is omitted when None."""
    card = {
        "name": NAME,
        "title": "Tiny test dataset served from 127.0.0.1",
        "bundled": False,
        "source": {
            "urls": urls,
            "filename": "tiny.h5ad",
            "format": "h5ad",
            "compression": compression,
            "sha256": sha256,
            "size_bytes": None,
            "verified": sha256 is not None,
        },
        "license": "CC0-1.0",
        "citation": {"text": "test", "doi": None},
        "organism": "human",
        "perturbation_type": ["CRISPRi"],
        "representation": "counts",
        "obs_mapping": {
            "condition": "pert",
            "control": "ctrl",
            "combination_separator": "_",
            "covariates": ["cell_line"],
            "cell_type": "cell_line",
        },
        "preprocessing": {
            "normalize_total": 1e4,
            "log1p": True,
            "n_top_genes": 3,
            "keep_perturbation_targets": True,
        },
        "stats": {"n_cells": 40, "n_perturbations": 3},
    }
    if checksum is not None:
        card["source"]["checksum"] = checksum
    return card


@pytest.fixture
def card(server, h5ad_bytes):
    """Register a card for /tiny.h5ad with the right sha256; yields a re-registration helper."""

    def make(sha256: str | None = hashlib.sha256(h5ad_bytes).hexdigest(), **kw) -> dict:
        c = make_card(kw.pop("urls", [f"{server.url}/tiny.h5ad"]), sha256, **kw)
        ds.register(c, overwrite=True)
        return c

    make()
    yield make
    ds.unregister(NAME)


def leftovers(cache: Path) -> list[str]:
    folder = cache / NAME
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
