"""The bad-input matrix: every kind of wrong input to ``fit``, ``predict``, the configs and
``evaluate`` gives a clear error (type and a phrase of its message) or a warning, before any work.

Each row is one case: what is wrong, the exception (or warning) and a phrase of the message
that says what is wrong, where, or how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scdit
from scdit import FlowConfig, SamplingConfig, TrainConfig
from scdit.data import counts_to_log1p, split_label, validate
from scdit.evaluate import evaluate
from tests.helpers import TINY, make_counts_adata, make_log1p_adata

# ---------------------------------------------------------------------------- data builders


def _with_x(adata: ad.AnnData, X) -> ad.AnnData:
    out = adata.copy()
    out.X = np.asarray(X, dtype=np.float32)
    return out


def _normalised(adata: ad.AnnData, target_sum: float = 1e4) -> np.ndarray:
    """``normalize_total`` without ``log1p``."""
    X = np.asarray(adata.X, dtype=np.float64)
    return X / X.sum(1, keepdims=True) * target_sum


def _soupx(adata: ad.AnnData) -> np.ndarray:
    """Ambient-corrected counts: non-integer where a little was subtracted, large values."""
    X = np.asarray(adata.X, dtype=np.float64)
    return np.where(X > 3, X - 0.37, X)


def _log1p(adata: ad.AnnData) -> np.ndarray:
    return counts_to_log1p(np.asarray(adata.X))


def _set(value: float, layer: bool = False) -> Callable[[ad.AnnData], ad.AnnData]:
    """log1p data with one value replaced (X[3, 4] = value)."""
    def mutate(adata):
        X = _log1p(adata)
        X[3, 4] = value
        return _with_x(adata, X)
    return mutate


def _relabel(**mapping: str) -> Callable[[ad.AnnData], ad.AnnData]:
    """Relabel the cells of some conditions (``G3="G3+"``); ``_CTRL`` is the control."""
    def mutate(adata):
        out = adata.copy()
        mapping_ = {("ctrl" if k == "_CTRL" else k): v for k, v in mapping.items()}
        out.obs["condition"] = out.obs["condition"].replace(mapping_)
        return out
    return mutate


def _relabel_some(label: str, n: int = 7) -> Callable[[ad.AnnData], ad.AnnData]:
    """The first ``n`` G3 cells get ``label``."""
    def mutate(adata):
        out = adata.copy()
        cond = out.obs["condition"].astype(str).to_numpy().copy()
        cond[np.flatnonzero(cond == "G3")[:n]] = label
        out.obs["condition"] = cond
        return out
    return mutate


def _backed(adata: ad.AnnData, tmp_path) -> ad.AnnData:
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return ad.read_h5ad(path, backed="r")


# ---------------------------------------------------------------------------- fit: errors

R = "representation"
FIT_CASES = [
    # representation
    pytest.param(lambda a: _with_x(a, _normalised(a)), {}, ValueError,
                 r"Every cell of adata.X sums to 10000: .*normalize_total.* not log-transformed.*"
                 r"sc.pp.log1p", id="normalize_total-without-log1p"),
    pytest.param(lambda a: _with_x(a, _normalised(a, 1.0)), {}, ValueError,
                 r"sums to 1: the data look library-normalised", id="normalized-to-fractions"),
    pytest.param(lambda a: _with_x(a, _normalised(a))[:, :30].copy(), {}, ValueError,
                 r"non-integer values up to \d+.*far above log1p.*run sc.pp.log1p",
                 id="normalised-then-gene-subset"),
    pytest.param(lambda a: _with_x(a, _soupx(a)), {}, ValueError,
                 r"far above log1p.*non-integer corrected counts \(e.g. SoupX", id="soupx-counts"),
    pytest.param(_set(1e30), {}, ValueError, r"values up to 1e\+30, far above", id="log1p-1e30"),
    pytest.param(_set(26.0), {}, ValueError, r"up to 26.*scdit refuses values above 25",
                 id="log1p-above-bound"),
    pytest.param(_set(np.inf), {}, ValueError, r"adata.X holds 0 NaN, 1 infinite",
                 id="log1p-inf"),
    pytest.param(_set(np.nan), {}, ValueError, r"adata.X holds 1 NaN, 0 infinite and 0 negative "
                 r"values in 1 cell\(s\) and 1 gene\(s\) \(first at cell 3, gene 4\)",
                 id="log1p-nan"),
    pytest.param(_set(-0.5), {}, ValueError, r"1 negative values.*scaled/centred data is not "
                 r"supported", id="log1p-negative"),
    pytest.param(lambda a: _with_x(a, _soupx(a)), {R: "counts"}, ValueError,
                 r"Raw counts are required.*non-integer.*SoupX.*round them",
                 id="counts-requested-soupx"),
    pytest.param(lambda a: _with_x(a, _log1p(a)), {R: "counts"}, ValueError,
                 r"Raw counts are required but adata.X holds non-integer values",
                 id="counts-requested-log1p"),
    pytest.param(lambda a: a, {R: "log1p"}, ValueError,
                 r"representation='log1p' but adata.X holds only non-negative integers",
                 id="log1p-requested-counts"),
    pytest.param(lambda a: a, {R: "raw"}, ValueError,
                 r"representation must be 'counts', 'log1p' or None", id="representation-raw"),
    pytest.param(lambda a: a, {"layer": "raw"}, KeyError, r"Layer 'raw' not found",
                 id="unknown-layer"),
    pytest.param(lambda a: ad.AnnData(a.X, obs=a.obs, var=a.var,
                                      layers={"norm": _normalised(a).astype(np.float32)}),
                 {"layer": "norm"}, ValueError, r"Every cell of adata.layers\['norm'\] sums to",
                 id="normalised-layer"),
    pytest.param(lambda a: ad.AnnData(a.X, obs=a.obs, var=a.var,
                                      layers={"txt": np.full(a.shape, "1", dtype=object)}),
                 {"layer": "txt"}, TypeError, r"adata.layers\['txt'\] holds object values; "
                 r"expression must be numeric", id="non-numeric-layer"),
    # labels
    pytest.param(_relabel_some(""), {}, ValueError,
                 r"adata.obs\['condition'\] has 1 malformed label\(s\) on 7 cell\(s\): '' \(7 "
                 r"cells: an empty or whitespace-only label\)", id="label-empty"),
    pytest.param(_relabel_some("   "), {}, ValueError, r"'   ' \(7 cells: an empty",
                 id="label-whitespace-only"),
    pytest.param(_relabel_some("+"), {}, ValueError, r"'\+' \(7 cells: an empty member",
                 id="label-separator-alone"),
    pytest.param(_relabel_some("G1+"), {}, ValueError,
                 r"'G1\+' \(7 cells: an empty member \(a leading, trailing or doubled separator",
                 id="label-trailing-separator"),
    pytest.param(_relabel_some("+G2"), {}, ValueError, r"'\+G2' \(7 cells: an empty member",
                 id="label-leading-separator"),
    pytest.param(_relabel_some(" G1"), {}, ValueError,
                 r"' G1' \(7 cells: whitespace at the start or end\).*\.str\.strip\(\)",
                 id="label-leading-space"),
    pytest.param(_relabel_some("G1 "), {}, ValueError, r"'G1 ' \(7 cells: whitespace",
                 id="label-trailing-space"),
    pytest.param(_relabel_some("G1++G2"), {}, ValueError, r"'G1\+\+G2' \(7 cells: an empty",
                 id="label-double-separator"),
    pytest.param(_relabel_some("G1+G1"), {}, ValueError,
                 r"'G1\+G1' \(7 cells: a repeated member \('G1'\)\)", id="label-repeated-member"),
    pytest.param(_relabel_some("G1 + G2"), {}, ValueError,
                 r"'G1 \+ G2' \(7 cells: whitespace around a member", id="label-spaced-member"),
    pytest.param(_relabel(G1="G1+", G2=" G2", G3=""), {}, ValueError,
                 r"has 3 malformed label\(s\) on 180 cell\(s\): '' \(60 cells.*'G1\+' \(60",
                 id="labels-several-malformed"),
    pytest.param(lambda a: a, {"control": "G9"}, ValueError, r"control='G9' does not occur",
                 id="control-absent"),
    pytest.param(_relabel_some("control", 20), {}, ValueError,
                 r"Several control labels found: 'control' \(20 cells\), 'ctrl' \(160 cells\)"
                 r".*Pass control=", id="two-control-labels"),
    pytest.param(_relabel(_CTRL="untreated"), {}, ValueError,
                 r"No control cells found.*'untreated'.*control=", id="no-control-label"),
    pytest.param(lambda a: a[a.obs["condition"] == "ctrl"].copy(), {}, ValueError,
                 r"Only control cells", id="only-control"),
    pytest.param(lambda a: _relabel_some(np.nan, 3)(a), {}, ValueError,
                 r"has 3 missing \(NaN\) labels", id="label-nan"),
    pytest.param(lambda a: _with_obs(a, condition=np.arange(a.n_obs) % 3), {}, TypeError,
                 r"must hold string labels, found int", id="label-int"),
    # parameters: zero is never "default"
    pytest.param(lambda a: a, {"max_steps": 0}, ValueError,
                 r"max_steps must be an integer ≥ 1 or None, got 0 \(None picks the length",
                 id="max_steps-0"),
    pytest.param(lambda a: a, {"max_steps": -5}, ValueError, r"max_steps must be an integer ≥ 1",
                 id="max_steps-negative"),
    pytest.param(lambda a: a, {"max_steps": 2.5}, TypeError, r"max_steps must be an integer",
                 id="max_steps-float"),
    pytest.param(lambda a: a, {"max_steps": True}, TypeError, r"max_steps must be an integer",
                 id="max_steps-bool"),
    pytest.param(lambda a: a, {"max_steps": "10"}, TypeError, r"max_steps must be an integer",
                 id="max_steps-str"),
    pytest.param(lambda a: a, {"max_minutes": 0}, ValueError,
                 r"max_minutes must be a number > 0 or None, got 0 \(None disables",
                 id="max_minutes-0"),
    pytest.param(lambda a: a, {"max_minutes": float("nan")}, ValueError,
                 r"max_minutes must be a number > 0", id="max_minutes-nan"),
    pytest.param(lambda a: a, {"seed": -1}, ValueError, r"seed must be an integer ≥ 0, got -1",
                 id="seed-negative"),
    pytest.param(lambda a: a, {"seed": 1.5}, TypeError, r"seed must be an integer",
                 id="seed-float"),
    pytest.param(lambda a: a, {"train": {"batch_size": 0}}, ValueError,
                 r"TrainConfig.batch_size must be an integer ≥ 1, got 0", id="batch_size-0"),
    pytest.param(lambda a: a, {"covariate_keys": ["cell_type", "cell_type"]}, ValueError,
                 r"covariate_keys repeats \['cell_type'\]", id="covariate-keys-repeated"),
    pytest.param(lambda a: a, {"covariate_keys": ["condition"]}, ValueError,
                 r"covariate_keys contains the condition key 'condition'",
                 id="covariate-key-is-condition"),
    pytest.param(lambda a: a, {"covariate_keys": [1]}, TypeError,
                 r"covariate_keys must be obs column names \(strings\), got \[1\]",
                 id="covariate-keys-int"),
    pytest.param(lambda a: a, {"covariate_keys": 5}, TypeError,
                 r"covariate_keys must be an obs column name or a list", id="covariate-keys-5"),
    pytest.param(lambda a: a, {"covariate_keys": "donor"}, KeyError,
                 r"covariate key 'donor' is not a column", id="covariate-key-string-missing"),
    pytest.param(lambda a: _with_obs(a, cell_type=[None] * a.n_obs), {"covariate_keys": "cell_type"},
                 ValueError, r"adata.obs\['cell_type'\] has missing values",
                 id="covariate-missing-values"),
    pytest.param(lambda a: a, {"condition_key": ["condition"]}, TypeError,
                 r"condition_key must be the name of an obs column", id="condition-key-list"),
    pytest.param(lambda a: a, {"condition_key": "perturbation"}, KeyError,
                 r"condition_key='perturbation' is not a column", id="condition-key-missing"),
    pytest.param(lambda a: a, {"separator": 1}, TypeError, r"separator must be a string",
                 id="separator-int"),
    pytest.param(lambda a: a, {"dose_key": "dose"}, KeyError,
                 r"dose_key 'dose' is not a column", id="dose-key-missing"),
    pytest.param(lambda a: a, {"preset": "huge"}, ValueError, r"Unknown preset 'huge'",
                 id="preset-unknown"),
    pytest.param(lambda a: a.to_df(), {}, TypeError, r"Expected an AnnData object, got DataFrame",
                 id="not-anndata"),
    pytest.param(lambda a: a[:0].copy(), {}, ValueError, r"AnnData is empty \(0 cells",
                 id="empty"),
    pytest.param(lambda a: _with_var_names(a, ["G0"] * 2 + a.var_names[2:].tolist()), {},
                 ValueError, r"Gene names are not unique \(e.g. \['G0'\]\)",
                 id="duplicate-genes"),
]


def _with_obs(adata: ad.AnnData, **columns) -> ad.AnnData:
    out = adata.copy()
    for k, v in columns.items():
        out.obs[k] = v
    return out


def _with_var_names(adata: ad.AnnData, names) -> ad.AnnData:
    out = adata.copy()
    out.var_names = names
    return out


@pytest.mark.parametrize(("mutate", "kwargs", "exc", "match"), FIT_CASES)
def test_fit_refuses_bad_input(mutate, kwargs, exc, match):
    adata = mutate(make_counts_adata())
    kwargs = {"condition_key": "condition", "preset": "tiny", "verbose": False, **kwargs}
    with pytest.raises(exc, match=match):
        scdit.fit(adata, **kwargs)


def test_fit_streams_a_backed_anndata(tmp_path):
    """A backed AnnData is on-disk data: fit streams it (tests/model/test_fit_ondisk.py) and
    leaves it backed; its values are checked like in-memory ones."""
    backed = _backed(make_counts_adata(), tmp_path)
    model = scdit.fit(backed, "condition", preset="tiny", max_steps=3, verbose=False,
                      train={"calibrate_guidance": False})
    assert model.summary["on_disk"]["n_sample"] == backed.n_obs and backed.isbacked


def test_fit_never_modifies_the_refused_anndata():
    adata = _relabel_some("G1+")(make_counts_adata())
    before = adata.copy()
    with pytest.raises(ValueError):
        scdit.fit(adata, "condition", preset="tiny", verbose=False)
    assert adata.obs.equals(before.obs) and np.array_equal(adata.X, before.X)


# ---------------------------------------------------------------------------- warnings


def _mostly_integer(adata: ad.AnnData) -> np.ndarray:
    """Partially corrected counts of small values: non-integer, but mostly integers, ≤ 25."""
    X = np.minimum(np.asarray(adata.X, dtype=np.float64), 20)
    X[X == 7] -= 0.25
    return X


WARN_CASES = [
    pytest.param(_set(18.0), {}, r"adata.X is taken as log1p but holds values up to 18, above "
                 r"log1p\(normalize_total\)", id="log1p-above-plausible"),
    pytest.param(lambda a: _with_x(a, _mostly_integer(a)), {},
                 r"of its non-zero values are integers.*partially corrected counts",
                 id="mostly-integer-non-integer"),
    pytest.param(_relabel_some("control", 20), {"control": "ctrl"},
                 r"control='ctrl', but \['control'\] .* look like control labels too; they are "
                 r"treated as perturbations", id="other-control-like-label"),
    pytest.param(_relabel_some("G4", 4), {}, r"1 condition\(s\) have fewer than 10 cells "
                 r"\('G4': 4\)", id="few-cells"),
]


@pytest.mark.parametrize(("mutate", "kwargs", "match"), WARN_CASES)
def test_validation_warns(mutate, kwargs, match):
    with pytest.warns(UserWarning, match=match):
        validate(mutate(make_counts_adata()), "condition", **kwargs)


def test_fit_warns_loudly_about_implausible_log1p():
    with pytest.warns(UserWarning, match=r"taken as log1p but holds values up to 18"):
        scdit.fit(_set(18.0)(make_counts_adata()), "condition", max_steps=1, **TINY)


# ---------------------------------------------------------------------------- configs

CONFIG_CASES = [
    pytest.param(SamplingConfig, {"steps": 0}, ValueError,
                 r"SamplingConfig.steps must be an integer ≥ 1 or None, got 0", id="steps-0"),
    pytest.param(SamplingConfig, {"steps": -2}, ValueError, r"steps must be an integer ≥ 1",
                 id="steps-negative"),
    pytest.param(SamplingConfig, {"steps": 2.5}, TypeError, r"steps must be an integer",
                 id="steps-float"),
    pytest.param(SamplingConfig, {"guidance_scale": float("nan")}, ValueError,
                 r"guidance_scale must be a number ≥ 0 or None, got nan", id="guidance-nan"),
    pytest.param(SamplingConfig, {"guidance_scale": float("inf")}, ValueError,
                 r"guidance_scale must be a number ≥ 0 or None, got inf", id="guidance-inf"),
    pytest.param(SamplingConfig, {"guidance_scale": -1.0}, ValueError,
                 r"guidance_scale must be a number ≥ 0 or None, got -1.0 \(1 is the plain conditional",
                 id="guidance-negative"),
    pytest.param(SamplingConfig, {"guidance_scale": "2"}, TypeError,
                 r"guidance_scale must be a number", id="guidance-str"),
    pytest.param(SamplingConfig, {"compose": float("nan")}, ValueError,
                 r"compose must be a number ≥ 0 and ≤ 1 or None, got nan", id="compose-nan"),
    pytest.param(SamplingConfig, {"compose": -0.5}, ValueError, r"compose must be a number ≥ 0",
                 id="compose-negative"),
    pytest.param(SamplingConfig, {"compose": 1.5}, ValueError, r"compose must be .*≤ 1",
                 id="compose-above-1"),
    pytest.param(SamplingConfig, {"batch_size": 0}, ValueError,
                 r"batch_size must be an integer ≥ 1, got 0", id="sampling-batch-0"),
    pytest.param(SamplingConfig, {"batch_size": 2.5}, TypeError,
                 r"batch_size must be an integer", id="sampling-batch-float"),
    pytest.param(SamplingConfig, {"solver": 3}, TypeError, r"solver must be a solver name",
                 id="solver-int"),
    pytest.param(FlowConfig, {"steps": 0}, ValueError,
                 r"FlowConfig.steps must be an integer ≥ 1, got 0", id="flow-steps-0"),
    pytest.param(FlowConfig, {"compose": float("nan")}, ValueError,
                 r"FlowConfig.compose must be a number ≥ 0 and ≤ 1", id="flow-compose-nan"),
    pytest.param(FlowConfig, {"source_noise": -0.1}, ValueError,
                 r"FlowConfig.source_noise must be a number ≥ 0", id="flow-source-noise-negative"),
    pytest.param(FlowConfig, {"time_sampling": "beta"}, ValueError,
                 r"FlowConfig.time_sampling = 'beta' is not a time sampler",
                 id="flow-time-sampling-unknown"),
    pytest.param(TrainConfig, {"max_steps": 0}, ValueError,
                 r"TrainConfig.max_steps must be an integer ≥ 1 or None, got 0",
                 id="train-max_steps-0"),
    pytest.param(TrainConfig, {"lr": 0.0}, ValueError, r"TrainConfig.lr must be a number > 0",
                 id="train-lr-0"),
    pytest.param(TrainConfig, {"val_fraction": 1.0}, ValueError,
                 r"val_fraction must be a number ≥ 0 and < 1", id="train-val_fraction-1"),
    pytest.param(TrainConfig, {"ema_decay": float("nan")}, ValueError,
                 r"ema_decay must be a number", id="train-ema-nan"),
    pytest.param(TrainConfig, {"min_cells": -1}, ValueError, r"min_cells must be an integer ≥ 0",
                 id="train-min_cells-negative"),
    pytest.param(TrainConfig, {"calibrate_guidance": 1}, TypeError,
                 r"TrainConfig.calibrate_guidance must be True or False, got 1",
                 id="train-calibrate_guidance-int"),
]


@pytest.mark.parametrize(("cls", "kwargs", "exc", "match"), CONFIG_CASES)
def test_configs_refuse_bad_values(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


# ---------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def model():
    """A tiny counts model; ``covariate_keys`` given as a single string (one key)."""
    return scdit.fit(make_counts_adata(), "condition", covariate_keys="cell_type", max_steps=3,
                     seed=0, **TINY)


def test_a_single_covariate_key_string_is_one_key(model):
    assert model.covariates.keys == ("cell_type",)


def _source(mutate: Callable[[ad.AnnData], ad.AnnData] | None = None) -> ad.AnnData:
    adata = make_counts_adata()
    src = adata[adata.obs["condition"] == "ctrl"][:20].copy()
    return mutate(src) if mutate else src


def _src_value(value: float) -> ad.AnnData:
    def mutate(src):
        X = np.asarray(src.X, dtype=np.float32).copy()
        X[2, 5] = X[4, 5] = value
        return _with_x(src, X)
    return _source(mutate)


KW = {"n_cells": 5, "covariates": {"cell_type": "T"}, "seed": 0}
PREDICT_CASES = [
    pytest.param(None, {}, TypeError, r"perturbations must be a label or a list of labels, got "
                 r"None", id="labels-none"),
    pytest.param(3, {}, TypeError, r"perturbations must be a label or a list of labels, got 3",
                 id="labels-int"),
    pytest.param([], {}, ValueError, r"perturbations is empty", id="labels-empty-list"),
    pytest.param(["G1", 3], {}, TypeError, r"perturbation labels must be strings, got \[3\]",
                 id="labels-mixed"),
    pytest.param("G1+", {}, ValueError, r"Malformed condition label 'G1\+': an empty member",
                 id="label-trailing-separator"),
    pytest.param("+G1", {}, ValueError, r"Malformed condition label '\+G1'",
                 id="label-leading-separator"),
    pytest.param(" G1", {}, ValueError, r"Malformed condition label ' G1': whitespace",
                 id="label-leading-space"),
    pytest.param("G1++G2", {}, ValueError, r"Malformed condition label 'G1\+\+G2'",
                 id="label-double-separator"),
    pytest.param("G1+G1", {}, ValueError, r"'G1\+G1': a repeated member \('G1'\)",
                 id="label-repeated-member"),
    pytest.param("", {}, ValueError, r"Malformed condition label '': an empty",
                 id="label-empty"),
    pytest.param("+", {}, ValueError, r"Malformed condition label '\+'", id="label-plus-alone"),
    pytest.param("XYZ", {}, KeyError, r"Unknown perturbation\(s\) \['XYZ'\]", id="label-unknown"),
    pytest.param("G1", {"n_cells": 0}, ValueError, r"n_cells must be a positive integer, got 0",
                 id="n_cells-0"),
    pytest.param("G1", {"n_cells": -3}, ValueError, r"n_cells must be a positive integer",
                 id="n_cells-negative"),
    pytest.param("G1", {"n_cells": 2.5}, ValueError, r"n_cells must be a positive integer",
                 id="n_cells-float"),
    pytest.param("G1", {"n_cells": "5"}, TypeError, r"n_cells must be a positive integer, got str",
                 id="n_cells-str"),
    pytest.param("G1", {"seed": -1}, ValueError, r"seed must be a non-negative integer",
                 id="seed-negative"),
    pytest.param("G1", {"seed": 2.5}, ValueError, r"seed must be a non-negative integer",
                 id="seed-float"),
    pytest.param("G1", {"seed": "0"}, ValueError, r"seed must be a non-negative integer",
                 id="seed-str"),
    pytest.param("G1", {"covariates": "T"}, TypeError,
                 r"covariates must be a mapping \{key: value\}.*got str 'T'", id="covariates-str"),
    pytest.param("G1", {"covariates": ["T"]}, TypeError, r"covariates must be a mapping",
                 id="covariates-list"),
    pytest.param("G1", {"covariates": {"cell_type": "NK"}}, KeyError,
                 r"Unknown value\(s\) \['NK'\] for covariate 'cell_type'", id="covariate-unknown"),
    pytest.param("G1", {"covariates": {"donor": "d1"}}, KeyError,
                 r"Unknown covariate key\(s\) \['donor'\]", id="covariate-key-unknown"),
    pytest.param("G1", {"dose": 1.0}, ValueError, r"trained without dose_key; do not pass dose",
                 id="dose-without-dose-model"),
    pytest.param("G1", {"sampling": SamplingConfig(solver="nope")}, ValueError,
                 r"Unknown solver 'nope'", id="solver-unknown"),
    pytest.param("G1", {"sampling": {"steps": 5}}, TypeError,
                 r"sampling must be a scdit.SamplingConfig", id="sampling-dict"),
    pytest.param("G1", {"effects": 3}, TypeError, r"effects must be 'auto', 'always', 'none'",
                 id="effects-int"),
    pytest.param("G1", {"representation": "raw"}, ValueError,
                 r"representation must be None, 'log1p' or 'counts'", id="representation-raw"),
]


@pytest.mark.parametrize(("labels", "kwargs", "exc", "match"), PREDICT_CASES)
def test_predict_refuses_bad_arguments(model, labels, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        model.predict(labels, **{**KW, **kwargs})


SOURCE_CASES = [
    pytest.param(lambda: _src_value(np.nan), {}, ValueError,
                 r"source.X holds 2 NaN, 0 infinite and 0 negative values in 2 cell\(s\) and 1 "
                 r"gene\(s\) \(first at cell 2, gene 5\)", id="source-nan"),
    pytest.param(lambda: _src_value(np.inf), {}, ValueError, r"source.X holds 0 NaN, 2 infinite",
                 id="source-inf"),
    pytest.param(lambda: _src_value(-1.3), {}, ValueError,
                 r"source.X holds 0 NaN, 0 infinite and 2 negative.*scaled/centred",
                 id="source-negative"),
    pytest.param(lambda: _source(lambda s: _with_x(s, _normalised(s))), {}, ValueError,
                 r"Every cell of source.X sums to 10000", id="source-normalised"),
    pytest.param(lambda: _source(lambda s: _with_x(s, _log1p(s))), {}, ValueError,
                 r"source holds log1p but the model was trained on counts",
                 id="source-log1p-for-counts-model"),
    pytest.param(lambda: _source()[:, 5:].copy(), {}, ValueError,
                 r"source has different genes: 5 training gene\(s\) are missing",
                 id="source-genes-missing"),
    pytest.param(lambda: _source()[:0].copy(), {}, ValueError, r"source has no cells",
                 id="source-empty"),
    pytest.param(lambda: _source().to_df(), {}, TypeError,
                 r"source must be an AnnData of cells, got DataFrame", id="source-dataframe"),
    pytest.param(lambda: _source(), {"layer": "counts"}, KeyError, r"Layer 'counts' not found",
                 id="source-layer-missing"),
    pytest.param(lambda: _source(lambda s: _with_obs(s, cell_type="NK")), {}, KeyError,
                 r"Unknown value\(s\) \['NK'\]", id="source-covariate-unknown"),
]


@pytest.mark.parametrize(("make", "kwargs", "exc", "match"), SOURCE_CASES)
def test_predict_refuses_bad_source_cells(model, make, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        model.predict("G1", source=make(), seed=0, **kwargs)


def test_predict_refuses_backed_source(model, tmp_path):
    with pytest.raises(ValueError, match=r"source is backed .*source.to_memory\(\)"):
        model.predict("G1", source=_backed(_source(), tmp_path), seed=0)


def test_sample_refuses_a_string_as_covariates(model):
    with pytest.raises(TypeError, match=r"covariates must be a mapping .* or a DataFrame"):
        model.sample("G1", 5, covariates="T", seed=0)


# ---------------------------------------------------------------------------- evaluate


def _eval_pair() -> tuple[ad.AnnData, ad.AnnData]:
    real = make_log1p_adata(sparse=False)
    return real.copy(), real


def _bad_pred(value: float) -> tuple[ad.AnnData, ad.AnnData]:
    pred, real = _eval_pair()
    pred.X[np.flatnonzero(pred.obs["condition"] == "G1")[:3], 7] = value
    return pred, real


def _bad_real_control_cell() -> tuple[ad.AnnData, ad.AnnData]:
    pred, real = _eval_pair()
    real.X[0, 0] = np.nan  # cell 0 is a control cell
    return pred, real


def _normalised_pred() -> tuple[ad.AnnData, ad.AnnData]:
    pred, real = _eval_pair()
    counts = make_counts_adata()
    return _with_x(pred, _normalised(counts)), real


def _relabelled_pred(label: str) -> tuple[ad.AnnData, ad.AnnData]:
    pred, real = _eval_pair()
    pred.obs["condition"] = pred.obs["condition"].astype(str).replace({"G1": label})
    return pred, real


EVALUATE_CASES = [
    pytest.param(_bad_real_control_cell, ValueError,
                 r"`real`.X holds 1 NaN, 0 infinite and 0 negative values in 1 cell",
                 id="real-control-nan"),
    pytest.param(lambda: _bad_pred(-0.8), ValueError,
                 r"`pred`.X holds 0 NaN, 0 infinite and 3 negative.*scaled/centred",
                 id="pred-negative"),
    pytest.param(lambda: _bad_pred(np.inf), ValueError, r"`pred`.X holds 0 NaN, 3 infinite",
                 id="pred-inf"),
    pytest.param(lambda: _bad_pred(np.nan), ValueError, r"`pred`.X holds 3 NaN",
                 id="pred-nan"),
    pytest.param(lambda: _bad_pred(1e6), ValueError, r"`pred`.X holds non-integer values up to "
                 r"1e\+06, far above", id="pred-huge"),
    pytest.param(_normalised_pred, ValueError, r"Every cell of `pred`.X sums to 10000",
                 id="pred-normalised"),
    pytest.param(lambda: (_eval_pair()[0][:, 3:].copy(), _eval_pair()[1]), ValueError,
                 r"`pred` lacks 3 of the 50 genes", id="pred-genes-missing"),
    pytest.param(lambda: _relabelled_pred("G1+"), ValueError,
                 r"Malformed condition label 'G1\+'", id="pred-label-malformed"),
]


@pytest.mark.parametrize(("make", "exc", "match"), EVALUATE_CASES)
def test_evaluate_refuses_bad_input(make, exc, match):
    pred, real = make()
    with pytest.raises(exc, match=match):
        evaluate(pred, real, "condition", baselines=())


def test_evaluate_refuses_backed_input(tmp_path):
    pred, real = _eval_pair()
    with pytest.raises(ValueError, match=r"`pred` is backed .*to_memory\(\)"):
        evaluate(_backed(pred, tmp_path), real, "condition", baselines=())


# ---------------------------------------------------------------------------- the label parser


@pytest.mark.parametrize("label", ["", " ", "+", "A+", "+B", " A", "A ", "A++B", "A+A",
                                   "A + B"])
def test_the_one_label_parser_never_repairs_a_label(label):
    with pytest.raises(ValueError, match=re.escape(f"Malformed condition label {label!r}")):
        split_label(label, "ctrl")


def test_well_formed_labels_still_parse():
    assert split_label("B+A", "ctrl") == ("A", "B")
    assert split_label("A+ctrl", "ctrl") == ("A",)
    assert split_label("ctrl", "ctrl") == ()
    assert split_label("A B", "ctrl", separator=None) == ("A B",)
    assert pd.Series(["A+B"]).map(lambda s: split_label(s)).iloc[0] == ("A", "B")
