"""Fault tests of model files: interrupted (raised or killed) saves, damaged or edited files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import safetensors.torch
import torch

import scdit
from tests.helpers import dense


def _predict(model) -> np.ndarray:
    return dense(model.predict("G3", n_cells=15, seed=2).X)


def _shifted(path: Path):
    """A model that differs from the saved one: every weight shifted by 0.05."""
    model = scdit.load(path)
    with torch.no_grad():
        for p in model.field.parameters():
            p.add_(0.05)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory, log1p_model):
    """The tiny log1p model saved once, with its predictions and those of a shifted copy."""
    path = log1p_model.save(tmp_path_factory.mktemp("saved") / "model")
    return {"path": path, "before": _predict(log1p_model), "shifted": _predict(_shifted(path))}


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    """A fresh copy of the saved model folder, alone in its parent folder."""
    return Path(shutil.copytree(saved["path"], tmp_path / "model"))


def _edit_config(path: Path, edit) -> None:
    meta = json.loads((path / "config.json").read_text())
    edit(meta)
    (path / "config.json").write_text(json.dumps(meta))


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ saving
def test_round_trip_records_file_hashes(saved, model_dir):
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["format_version"] == scdit.model.FORMAT_VERSION == 2
    for name in ("model.safetensors", "reference.h5ad"):
        assert meta["files"][name] == {"sha256": _sha256(model_dir / name),
                                       "size": (model_dir / name).stat().st_size}
    assert np.array_equal(_predict(scdit.load(model_dir)), saved["before"])
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]  # no temp folders


def _fail_in_weights(monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full (injected)")
    monkeypatch.setattr(safetensors.torch, "save_file", boom)


def _fail_in_reference(monkeypatch):
    def boom(self, *args, **kwargs):
        raise OSError("disk full (injected)")
    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)


def _fail_in_config(monkeypatch):
    """Fail at the last file (config.json, written after the other two)."""
    def boom(*args, **kwargs):
        raise OSError("disk full (injected)")
    monkeypatch.setattr(json, "dumps", boom)


@pytest.mark.parametrize("inject", [_fail_in_weights, _fail_in_reference, _fail_in_config])
def test_failed_save_keeps_previous_model(saved, model_dir, monkeypatch, inject):
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    other = _shifted(model_dir)
    inject(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        other.save(model_dir, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == files
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]
    assert np.array_equal(_predict(scdit.load(model_dir)), saved["before"])
    other.save(model_dir, overwrite=True)  # and a save that succeeds replaces it
    assert np.array_equal(_predict(scdit.load(model_dir)), saved["shifted"])
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]


def _save_and_get_killed(model, path: Path, when: str) -> int:
    """Save ``model`` over ``path`` in a forked child killed (SIGKILL) at ``when``; its status."""
    pid = os.fork()
    if pid == 0:  # the child: no cleanup code runs after a SIGKILL
        try:
            def die(*args, **kwargs):
                os.kill(os.getpid(), signal.SIGKILL)
            if when == "writing":
                ad.AnnData.write_h5ad = die  # the weights are written, the reference is not
            else:
                shutil.rmtree = die  # the new model is in place, the previous not yet removed
            model.save(path, overwrite=True)
        finally:
            os._exit(3)
    return os.waitpid(pid, 0)[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
@pytest.mark.parametrize(("when", "expected"), [("writing", "before"), ("swapped", "shifted")])
def test_killed_save_leaves_a_complete_model(saved, model_dir, when, expected):
    status = _save_and_get_killed(_shifted(model_dir), model_dir, when)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    left = [p.name for p in model_dir.parent.iterdir() if p.name != "model"]
    assert len(left) == 1 and left[0].startswith(".model.scdit-tmp-")  # killed mid-save
    model = scdit.load(model_dir)
    assert np.array_equal(_predict(model), saved[expected])
    model.save(model_dir, overwrite=True)  # the next save removes what the kill left
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_save_without_atomic_exchange(saved, model_dir, monkeypatch):
    """Where folders cannot be exchanged atomically (not Linux), the previous model is renamed
    aside, then the new one into place; a kill between the two renames is explained at load."""
    monkeypatch.setattr(sys, "platform", "darwin")
    other = _shifted(model_dir)
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the previous model is aside, the new one not yet in place
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
    pid = os.fork()
    if pid == 0:
        try:
            os.rename = rename
            other.save(model_dir, overwrite=True)
        finally:
            os._exit(3)
    assert os.WTERMSIG(os.waitpid(pid, 0)[1]) == signal.SIGKILL
    with pytest.raises(FileNotFoundError, match="interrupted save left the previous model in "
                                                ".*scdit-old-.*: rename that folder to"):
        scdit.load(model_dir)
    os.rename(next(model_dir.parent.glob(".model.scdit-old-*")), model_dir)
    assert np.array_equal(_predict(scdit.load(model_dir)), saved["before"])
    other.save(model_dir, overwrite=True)
    assert np.array_equal(_predict(scdit.load(model_dir)), saved["shifted"])
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]


def test_saved_folder_keeps_its_permissions(log1p_model, model_dir, tmp_path):
    model_dir.chmod(0o750)
    log1p_model.save(model_dir, overwrite=True)
    assert stat.S_IMODE(model_dir.stat().st_mode) == 0o750
    umask = os.umask(0o022)
    try:
        new = log1p_model.save(tmp_path / "fresh")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o755


def test_overwrite_refuses_folders_with_other_files(log1p_model, model_dir, tmp_path):
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not part of an scdit model \(\['notes.txt'\]\)"):
        log1p_model.save(model_dir, overwrite=True)
    assert (model_dir / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        log1p_model.save(tmp_path / "file", overwrite=True)


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("name", ["model.safetensors", "reference.h5ad"])
def test_flipped_bytes_are_detected(model_dir, name):
    file = model_dir / name
    raw = bytearray(file.read_bytes())
    raw[-20] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{name} is damaged: sha256 mismatch.*re-save or re-fit"):
        scdit.load(model_dir)


def test_truncated_weights_are_detected(model_dir):
    file = model_dir / "model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors is damaged: sha256 mismatch"):
        scdit.load(model_dir)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(model_dir, value):
    file = model_dir / "model.safetensors"
    tensors = safetensors.torch.load_file(file)
    key = sorted(k for k in tensors if k.startswith("field.") and "weight" in k)[0]
    tensors[key].view(-1)[0] = value
    safetensors.torch.save_file(tensors, file)
    _edit_config(model_dir, lambda m: m["files"]["model.safetensors"].update(
        sha256=_sha256(file), size=file.stat().st_size))  # hash matches: the values are checked
    with pytest.raises(ValueError, match=rf"NaN or infinite values .*{key}.*re-save or re-fit"):
        scdit.load(model_dir)


def test_missing_file_is_named(model_dir):
    (model_dir / "reference.h5ad").unlink()
    with pytest.raises(FileNotFoundError, match="reference.h5ad is missing"):
        scdit.load(model_dir)


def test_truncated_config(model_dir):
    text = (model_dir / "config.json").read_text()
    (model_dir / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"config.json is not valid JSON \(.* line \d+, column "
                                         r"\d+\); the file is truncated or damaged"):
        scdit.load(model_dir)


@pytest.mark.parametrize(("edit", "error", "phrase"), [
    (lambda m: m["config"]["dit"].update(hiden_size=32), ValueError,
     r"unknown key\(s\) \['hiden_size'\] in config.dit; valid keys: \['activation', 'backbone', 'cond_dropout'"),
    (lambda m: m["config"].update(sampler={}), ValueError,
     r"unknown key\(s\) \['sampler'\] in config; valid keys"),
    (lambda m: m.update(extra=1), ValueError, r"unknown key\(s\) \['extra'\] at the top level"),
    (lambda m: m["config"]["dit"].update(hidden_size="32"), TypeError,
     r"config.dit.hidden_size must be an integer, got str '32'"),
    (lambda m: m["config"]["dit"].update(depth=2.0), TypeError,
     r"config.dit.depth must be an integer, got float 2.0"),
    (lambda m: m["config"]["tokenizer"].update(patch_size=[3]), TypeError,
     r"config.tokenizer.patch_size must be an integer or null, got list"),
    (lambda m: m["config"]["dit"].update(mlp_ratio=float("nan")), TypeError,
     r"config.dit.mlp_ratio must be a number, got float nan"),
    (lambda m: m["config"]["dit"].update(hidden_size=10 ** 9), ValueError,
     r"config.dit.hidden_size = 1000000000 is outside its plausible range \[1, 16384\]"),
    (lambda m: m["config"]["data"].pop("condition_key"), ValueError,
     r"config.data lacks the required key\(s\) \['condition_key'\]"),
    (lambda m: m["vocab"].update(atoms="G1"), TypeError, r"vocab.atoms must be a list"),
    (lambda m: m["tokenizer"].update(n_tokens=-1), ValueError,
     r"tokenizer.n_tokens = -1 is outside its plausible range"),
    (lambda m: m.update(format_version="2"), TypeError,
     r"format_version must be an integer, got str '2'"),
    (lambda m: m.update(format_version=3), ValueError,
     r"saved by a newer scdit \(format 3; .*\); upgrade scdit"),
    (lambda m: m.update(format_version=0), ValueError, r"format_version 0 is not a format"),
    (lambda m: m.pop("format_version"), ValueError, r"has no 'format_version'"),
    (lambda m: m.pop("files"), ValueError, r"lacks its 'files' section"),
    (lambda m: m["files"]["reference.h5ad"].update(sha256="abc"), ValueError,
     r"files.reference.h5ad.sha256: 'abc' does not match"),
])
def test_edited_config_gets_a_clear_error(model_dir, edit, error, phrase):
    _edit_config(model_dir, edit)
    with pytest.raises(error, match=phrase) as info:
        scdit.load(model_dir)
    assert str(model_dir / "config.json") in str(info.value)


@pytest.mark.parametrize(("key", "value"), [("hidden_size", 4096), ("depth", 40),
                                            ("mlp_ratio", 8.0)])
def test_config_not_matching_the_weights_fails_before_allocating(model_dir, key, value):
    """A plausible but wrong size is caught against the safetensors header: the field is sized
    on the meta device first, so a 4096-wide DiT (gigabytes of weights) is never allocated."""
    _edit_config(model_dir, lambda m: m["config"]["dit"].update({key: value}))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"model.safetensors does not match .*config.json: "
                                         r".*The files do not belong together"):
        scdit.load(model_dir)
    assert time.perf_counter() - start < 10


def test_huge_feature_table_is_not_allocated(model_dir):
    """20,000 perturbations × 10⁶ features would be an 80 GB zero table if it were built."""
    def edit(meta):
        meta["config"]["conditions"].update(features="data", n_features=1_000_000)
        meta["vocab"]["atoms"] += [f"X{i}" for i in range(20_000)]
    _edit_config(model_dir, edit)
    with pytest.raises(ValueError, match=r"does not match .*: field.encoder.atoms.weight has "
                                         r"shape .* but the configuration implies \(20\d{3}, "
                                         r"\d+\) \(2 more such tensors\)"):
        scdit.load(model_dir)


def test_inconsistent_config_gets_a_clear_error(model_dir):
    _edit_config(model_dir, lambda m: m["config"]["dit"].update(num_heads=5))
    with pytest.raises(ValueError, match=r"config.json does not describe a model that can be "
                                         r"built \(hidden_size 32 must be divisible by "
                                         r"num_heads 5"):
        scdit.load(model_dir)


def test_format_1_without_hashes_still_loads(saved, model_dir):
    def to_format_1(meta):
        meta["format_version"] = 1
        del meta["files"]
    _edit_config(model_dir, to_format_1)
    assert np.array_equal(_predict(scdit.load(model_dir)), saved["before"])


def test_what_fit_accepts_save_and_load_round_trip(tmp_path):
    """Settings fit accepts are never refused by load: no combinations (separator=None) and a
    large token budget; sizes outside the plausible ranges are refused when the config is
    built, before any training."""
    from tests.helpers import TINY, make_counts_adata

    singles = make_counts_adata()
    singles = singles[singles.obs["condition"] != "G1+G2"].copy()
    model = scdit.fit(singles, "condition", separator=None, max_steps=2, **TINY)
    model.save(tmp_path / "nosep")
    assert scdit.load(tmp_path / "nosep").vocab.separator is None
    dit = scdit.DiTConfig(hidden_size=32, depth=2, num_heads=2, max_tokens=5000)
    kw = {k: v for k, v in TINY.items() if k != "preset"}
    model = scdit.fit(make_counts_adata(), "condition", dit=dit, max_steps=2, **kw)
    model.save(tmp_path / "wide")
    assert scdit.load(tmp_path / "wide").config.dit.max_tokens == 5000
    with pytest.raises(ValueError, match="plausible range"):
        scdit.DiTConfig(hidden_size=20000)
    with pytest.raises(ValueError, match="plausible range"):
        scdit.TokenizerConfig(max_tokens=10**6)
