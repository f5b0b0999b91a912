"""The ``scdit`` command line: one-line errors with exit status 2 (bad input) or 1 (failure)."""

from __future__ import annotations

import json

import pytest

from scdit.datasets import synthetic_perturbation
from scdit.pipelines import main
from scdit.splits import split_combinations

KINDS = "unseen_perturbations, combinations, covariate_context, dose, random_cells"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A tiny screen, its split and a prediction file, plus a truncated copy of the screen."""
    root = tmp_path_factory.mktemp("cli")
    data = synthetic_perturbation(n_genes=20, n_perturbations=4, n_combinations=2,
                                  n_cells_per_condition=20, n_control=40, cell_types=("A",),
                                  seed=0, return_truth=False)
    data.write_h5ad(root / "data.h5ad")
    split = split_combinations(data, "perturbation", seen=2)
    split.to_json(root / "split.json")
    held = data.obs["perturbation"].isin(split.held_out_conditions).to_numpy()
    data[held].copy().write_h5ad(root / "pred.h5ad")
    (root / "truncated.h5ad").write_bytes((root / "data.h5ad").read_bytes()[:3000])
    return {k: root / f"{k}.{ext}" for k, ext in
            [("data", "h5ad"), ("split", "json"), ("pred", "h5ad"), ("truncated", "h5ad")]} | {
        "root": root}


def _args(files, **over) -> list[str]:
    opts = {"data": files["data"], "condition-key": "perturbation", "split": files["split"],
            "pred": f"oracle={files['pred']}", "baselines": "mean", **over}
    out = ["benchmark"]
    for key, value in opts.items():
        if value is not None:
            out += [f"--{key}", str(value)]
    return out


def _fails(argv: list[str], capsys, code: int = 2) -> str:
    """Run ``main(argv)``, expect exit status ``code`` and return the one-line error."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scdit: error: "), err
    return lines[0]


def test_missing_data_file(files, capsys):
    missing = files["root"] / "nope.h5ad"
    line = _fails(_args(files, data=missing), capsys)
    assert f"--data file not found: {missing}" in line


def test_unreadable_data_file_names_it(files, capsys):
    line = _fails(_args(files, data=files["truncated"]), capsys)
    assert f"cannot read --data file {files['truncated']} as h5ad" in line


def test_wrong_condition_key_lists_the_columns(files, capsys):
    line = _fails(_args(files, **{"condition-key": "pert"}), capsys)
    assert "--condition-key 'pert' is not a column of obs in" in line
    assert "its columns are: perturbation, cell_type" in line


def test_wrong_covariate_key(files, capsys):
    line = _fails(_args(files, **{"covariate-key": "donor"}), capsys)
    assert "--covariate-key 'donor' is not a column of obs" in line


def test_missing_split_file_is_not_called_a_split_kind(files, capsys):
    missing = files["root"] / "missing_split.json"
    line = _fails(_args(files, split=missing), capsys)
    assert f"--split file not found: {missing}" in line and KINDS in line
    line = _fails(_args(files, split="combos"), capsys)
    assert "--split 'combos' is neither a split kind nor an existing file" in line


def test_damaged_split_file(files, capsys, tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text('{"train": [')
    line = _fails(_args(files, split=bad), capsys)
    assert f"cannot read the --split file {bad}" in line


def test_missing_prediction_file(files, capsys):
    missing = files["root"] / "gone.h5ad"
    line = _fails(_args(files, pred=f"gears={missing}"), capsys)
    assert f"--pred gears: prediction file not found: {missing}" in line


def test_scdit_value_error_from_the_pipeline(files, capsys):
    line = _fails(_args(files, control="ctrl_x"), capsys)
    assert "Control label 'ctrl_x' not found" in line


@pytest.mark.parametrize(("option", "value", "phrase"), [
    ("fit-kwargs", "{max_steps", "--fit-kwargs is not valid JSON"),
    ("fit-kwargs", "[1, 2]", "--fit-kwargs must be a JSON object"),
    ("pred", "no_equals_sign", "--pred expects NAME=PATH.h5ad"),
    ("config", "no_config.yaml", "--config file not found: no_config.yaml"),
])
def test_bad_options(files, capsys, option, value, phrase):
    assert phrase in _fails(_args(files, **{option: value}), capsys)


def test_missing_settings_exit_2(files, capsys):
    line = _fails(["benchmark", "--data", str(files["data"])], capsys)
    assert "missing setting(s) ['condition_key', 'split']" in line


def test_relative_split_in_config_is_resolved_against_the_config(files, capsys, tmp_path):
    cfg = {"data": str(files["data"]), "condition_key": "perturbation", "split": "s.json",
           "methods": {"oracle": str(files["pred"])}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    line = _fails(["benchmark", "--config", str(tmp_path / "cfg.json")], capsys)
    assert f"--split file not found: {tmp_path / 's.json'}" in line


def test_runtime_failure_exits_1(files, capsys, tmp_path):
    out = tmp_path / "report"
    out.write_text("a file where the report folder should go")
    line = _fails(_args(files, out=out), capsys, code=1)
    assert "FileExistsError" in line and "--debug" in line


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_exception(files, where):
    argv = _args(files, data=files["root"] / "nope.h5ad")
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(ValueError, match="--data file not found"):
        main(argv)
    with pytest.raises(ValueError, match="Control label 'ctrl_x' not found"):
        main([*_args(files, control="ctrl_x"), "--debug"])


def test_help_documents_exit_status(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit with status 2 for bad input" in text and "--debug" in text


def test_success_still_returns_0(files, capsys):
    assert main(_args(files)) == 0
    assert "oracle" in capsys.readouterr().out
