"""TrainConfig.compile: when a fit compiles its network, and that a compiled fit trains."""

from __future__ import annotations

import shutil
import sys

import pytest

import scdit
from scdit.train import COMPILE_MIN_MINUTES, COMPILE_MIN_STEPS, resolve_compile
from tests.helpers import tiny_train


def test_auto_compiles_long_runs_only():
    assert resolve_compile(True, 10, "cpu") and not resolve_compile(False, 10**6, "cpu")
    assert not resolve_compile("auto", COMPILE_MIN_STEPS - 1, "cpu")
    long = resolve_compile("auto", COMPILE_MIN_STEPS, "cpu")
    toolchain = sys.platform.startswith("linux") and any(
        shutil.which(c) for c in ("g++", "c++", "clang++"))
    assert long == toolchain
    # a short wall-time budget is not spent compiling
    assert not resolve_compile("auto", 10**6, "cpu", max_minutes=COMPILE_MIN_MINUTES / 2)
    assert resolve_compile("auto", 10**6, "cpu", max_minutes=COMPILE_MIN_MINUTES) == toolchain


@pytest.mark.slow  # compiling takes tens of seconds
@pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("g++"),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_fit_trains_like_an_eager_one(log1p_adata):
    """The compiled network has the same weights and function: a short fit's validation loss
    lands near the eager fit's, and the compiled model predicts as usual."""
    kw = dict(preset="tiny", max_steps=60, seed=0, verbose=False)
    train = tiny_train(val_every=30)
    eager = scdit.fit(log1p_adata, "condition", train=train, **kw)
    compiled = scdit.fit(log1p_adata, "condition",
                         train=tiny_train(val_every=30, compile=True), **kw)
    assert compiled.summary["compiled"] and not eager.summary["compiled"]
    first = eager.summary["history"][0]["val_loss"]
    assert compiled.summary["best_val_loss"] < first  # it learns
    assert compiled.summary["best_val_loss"] == pytest.approx(eager.summary["best_val_loss"],
                                                              rel=0.1)
    assert compiled.predict("G1", n_cells=20, seed=0).n_obs == 20
