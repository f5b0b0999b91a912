"""ScDiT.save / scdit.load: safetensors + JSON, no pickle, identical predictions."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

import scdit
from tests.helpers import GENES, dense


def _assert_no_pickle(path):
    for f in path.iterdir():
        head = f.read_bytes()[:4]
        assert not head.startswith(b"\x80"), f"{f.name} looks like a pickle"
        assert not head.startswith(b"PK"), f"{f.name} looks like a torch.save zip"


def test_save_load_round_trip(counts_model, tmp_path):
    before = counts_model.predict(["G1", "G1+G2"], n_cells=20, seed=3)
    path = counts_model.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors",
                                                      "reference.h5ad"]
    _assert_no_pickle(path)
    meta = json.loads((path / "config.json").read_text())
    assert meta["config"]["data"]["condition_key"] == "condition"
    assert meta["var_names"] == GENES
    raw = (path / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])  # safetensors: a JSON header, then raw tensor bytes
    assert any(k.startswith("field.") for k in header)

    loaded = scdit.load(path)
    assert loaded.config == counts_model.config
    assert loaded.vocab == counts_model.vocab and loaded.covariates == counts_model.covariates
    assert loaded.tokenizer.genes == counts_model.tokenizer.genes
    sd0, sd1 = counts_model.field.state_dict(), loaded.field.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    after = loaded.predict(["G1", "G1+G2"], n_cells=20, seed=3)
    assert np.array_equal(dense(before.X), dense(after.X))
    assert before.obs.equals(after.obs)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        counts_model.save(path)
    counts_model.save(path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="config.json"):
        scdit.load(tmp_path / "nothing")


def test_save_load_log1p_model_without_covariates(log1p_model, tmp_path):
    before = log1p_model.predict("G3", n_cells=15, seed=2)
    loaded = scdit.load(log1p_model.save(tmp_path / "m"))
    after = loaded.predict("G3", n_cells=15, seed=2)
    assert np.array_equal(dense(before.X), dense(after.X))
