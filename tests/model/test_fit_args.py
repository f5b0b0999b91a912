"""fit's arguments: at most 20, and each setting from one place (a keyword and a config field
never silently disagree)."""

from __future__ import annotations

import inspect

import pytest

import scdit
from scdit import DIT_PRESETS, DiTConfig, FlowConfig, TrainConfig
from tests.helpers import tiny_train


def test_fit_has_at_most_twenty_parameters():
    params = inspect.signature(scdit.fit).parameters
    assert len(params) <= 20, list(params)
    for moved in ("batch_size", "lr", "precision", "accelerator", "checkpoint_dir", "min_cells",
                  "n_top_genes", "max_tokens", "tokenizer_kwargs"):
        assert moved not in params


def test_keyword_defaults_match_the_config_defaults():
    """A keyword left at its default means the same as the config field left at its default."""
    params = inspect.signature(scdit.fit).parameters
    assert params["source"].default == FlowConfig().source == "auto"
    assert params["seed"].default == TrainConfig().seed
    assert repr(params["max_minutes"].default) == "None" and TrainConfig().max_minutes is None
    assert params["max_steps"].default is None and TrainConfig().max_steps is None


@pytest.mark.parametrize(("keyword", "config"), [
    ({"max_steps": 5}, {"train": TrainConfig(max_steps=7)}),
    ({"seed": 1}, {"train": TrainConfig(seed=2)}),
    ({"seed": 0}, {"train": TrainConfig(seed=2)}),  # explicitly given, even if equal to the default
    ({"max_minutes": None}, {"train": TrainConfig(max_minutes=3.0)}),
    ({"max_minutes": 2.0}, {"train": TrainConfig(max_minutes=3.0)}),
    ({"source": "noise"}, {"flow": FlowConfig(source="control")}),
])
def test_keyword_and_config_disagreeing_is_an_error(counts_adata, keyword, config):
    name, section = next(iter(keyword)), next(iter(config))
    with pytest.raises(ValueError, match=rf"{name}=.* disagrees with {section}=.*give it in one "
                                         r"place"):
        scdit.fit(counts_adata, "condition", preset="tiny", verbose=False, **keyword, **config)


def test_preset_and_dit_disagreeing_is_an_error(counts_adata):
    with pytest.raises(ValueError, match=r"preset='tiny' and dit= disagree"):
        scdit.fit(counts_adata, "condition", preset="tiny", dit=DiTConfig(depth=1),
                  verbose=False)


def test_output_fields_of_the_condition_config_are_refused(counts_adata):
    with pytest.raises(ValueError, match="set by fit from perturbation_features="):
        scdit.fit(counts_adata, "condition", conditions={"features": "data"}, preset="tiny",
                  verbose=False)


def test_bad_config_objects(counts_adata):
    with pytest.raises(TypeError, match=r"train= must be a TrainConfig \(or a dict"):
        scdit.fit(counts_adata, "condition", train=64, preset="tiny", verbose=False)
    with pytest.raises(ValueError, match=r"Unknown TrainConfig field\(s\) \['batchsize'\]"):
        scdit.fit(counts_adata, "condition", train={"batchsize": 64}, preset="tiny",
                  verbose=False)


def test_keywords_fill_config_fields_left_at_their_defaults(counts_adata):
    """A train config for the batch size plus max_steps / seed / max_minutes keywords, a flow
    config with the source keyword: each value ends up in the stored config; the same value in
    both places is fine; a dict works like the config."""
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], max_steps=3,
                      seed=4, max_minutes=None, source="noise",
                      train={"batch_size": 32, "seed": 4, "min_cells": 5,
                             "calibrate_guidance": False},
                      flow=FlowConfig(source_noise=0.2), preset="tiny", verbose=False)
    t, f = model.config.train, model.config.flow
    assert (t.batch_size, t.max_steps, t.seed, t.max_minutes, t.min_cells) == (32, 3, 4, None, 5)
    assert (f.source, f.source_noise) == ("noise", 0.2)
    assert model.summary["steps"] == 3


def test_config_values_apply_when_keywords_are_left_out(counts_adata):
    """With no keyword given the configs decide (source 'auto' resolved; dit instead of preset)."""
    dit = DIT_PRESETS["tiny"]
    model = scdit.fit(counts_adata, "condition", covariate_keys=["cell_type"], dit=dit,
                      train=tiny_train(max_steps=2, seed=3), verbose=False)
    assert model.config.dit == dit and model.config.train.seed == 3
    assert model.summary["steps"] == 2
    assert model.config.flow.source == "control"  # auto: covariates given
    # the default preset with a given dit is not a disagreement; a matching preset neither
    same = scdit.fit(counts_adata, "condition", preset="tiny", dit=dit, max_steps=1,
                     train=tiny_train(), verbose=False)
    assert same.config.dit == dit
