"""Command-line interface: ``scdit benchmark`` (also ``python -m scdit benchmark``).

Examples
--------
.. code-block:: bash

    scdit benchmark --config benchmark.yaml
    scdit benchmark --data screen.h5ad --condition-key perturbation --split split.json \\
        --pred gears=gears_pred.h5ad --pred scdit=scdit_pred.h5ad --out report/

A config file (YAML or JSON) holds the same settings::

    data: screen.h5ad
    condition_key: perturbation
    control: ctrl                  # optional (auto-detected)
    covariate_key: cell_type       # optional
    split: split.json              # or {kind: combinations, seen: [1, 2], seed: 0}
    methods: {gears: gears_pred.h5ad, scdit: scdit}   # "scdit" = fit scdit with defaults
    baselines: [no_change, mean, additive, linear, ceiling]
    seeds: [0]
    out: report/
    fit_kwargs: {max_steps: 2000}
    evaluate: {top_k_de: 20}

Relative paths in a config file are relative to the file. Command-line options override it.

Errors print one line, ``scdit: error: <what is wrong, where, how to fix it>``, on stderr and exit
with status 2 for bad input (a missing or unreadable file, an unknown column, split or setting:
the ``ValueError``, ``KeyError``, ``TypeError`` and ``FileNotFoundError`` of scdit) and 1 for a
failure while running (anything else); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from ..evaluate import summarize
from ..splits import Split
from ._benchmark import DEFAULT_BASELINES, SPLIT_KINDS, benchmark

#: Exit status of a bad input (as argparse uses for a bad command line).
EXIT_USAGE = 2
#: Exit status of a failure while running.
EXIT_FAILURE = 1
_INPUT_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError)


class CLIError(ValueError):
    """A bad setting or input file of the command line (exit status 2)."""


def _load_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--config file not found: {p} (give a YAML or JSON file of settings).")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            cfg = json.loads(text)
        else:
            import yaml

            cfg = yaml.safe_load(text) or {}
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        msg = " ".join(str(exc).split())
        raise CLIError(f"cannot parse the config file {p}: {type(exc).__name__}: {msg}") from exc
    if not isinstance(cfg, dict):
        raise CLIError(f"config {p} must be a mapping of settings (key: value), not "
                       f"{type(cfg).__name__}.")
    base = p.resolve().parent

    def rel(v):
        return str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v

    for key in ("data", "out"):
        if cfg.get(key) is not None:
            cfg[key] = rel(cfg[key])
    split = cfg.get("split")
    if isinstance(split, str) and split not in SPLIT_KINDS:
        cfg["split"] = rel(split)
    elif isinstance(split, dict) and "path" in split:
        cfg["split"] = rel(split["path"])
    methods = cfg.get("methods") or {}
    if not isinstance(methods, dict):
        raise CLIError(f"config {p}: methods must map names to h5ad files or 'scdit'.")
    cfg["methods"] = {k: v if v == "scdit" else rel(v) for k, v in methods.items()}
    return cfg


def _parse_pred(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CLIError(f"--pred expects NAME=PATH.h5ad, got {item!r}.")
        out[name] = path
    return out


def _split_list(v) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return list(v)


def _read_h5ad(path: str | Path, what: str) -> ad.AnnData:
    """Read an input h5ad, naming the option and the file when it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        kind = "is a folder, not a file" if p.is_dir() else "not found"
        raise CLIError(f"{what} file {kind}: {p} (give the path of an .h5ad file).")
    try:
        return ad.read_h5ad(p)
    except Exception as exc:  # h5py OSError, anndata read errors
        msg = " ".join(str(exc).split())
        raise CLIError(f"cannot read {what} file {p} as h5ad ({type(exc).__name__}: {msg}); is "
                       "it an AnnData .h5ad file, complete and not damaged?") from exc


def _check_column(adata: ad.AnnData, key: str | None, option: str, path: Any) -> None:
    if key is not None and key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns[:30])) or "(none)"
        more = f" and {adata.obs.shape[1] - 30} more" if adata.obs.shape[1] > 30 else ""
        raise CLIError(f"{option} {key!r} is not a column of obs in {path}; its columns are: "
                       f"{cols}{more}.")


def _resolve_split(split: Any) -> tuple[Any, dict | None]:
    """The split argument of :func:`benchmark` (a kind name or a loaded Split) and its params."""
    if isinstance(split, dict):
        kind = split.get("kind")
        if kind not in SPLIT_KINDS:
            raise CLIError(f"split: kind {kind!r} is not a split kind; use one of "
                           f"{', '.join(SPLIT_KINDS)} (or give a split JSON file).")
        return kind, {k: v for k, v in split.items() if k not in ("kind", "seed")}
    if not isinstance(split, str | Path):
        raise CLIError(f"split must be a split JSON file, a kind name or a mapping with a kind; "
                       f"got {type(split).__name__}.")
    if str(split) in SPLIT_KINDS:
        return str(split), None
    p = Path(split)
    if not p.is_file():
        kinds = ", ".join(SPLIT_KINDS)
        looks_like_path = p.suffix or len(p.parts) > 1
        what = f"--split file not found: {p}" if looks_like_path else (
            f"--split {str(split)!r} is neither a split kind nor an existing file")
        raise CLIError(f"{what}. Give a split JSON file (written by scdit.splits.Split.to_json) "
                       f"or one of the split kinds: {kinds}.")
    try:
        return Split.from_json(p), None
    except Exception as exc:  # JSON errors, missing fields
        msg = " ".join(str(exc).split())
        raise CLIError(f"cannot read the --split file {p} ({type(exc).__name__}: {msg}); write "
                       "it with scdit.splits.Split.to_json.") from exc


def _settings(args: argparse.Namespace) -> dict:
    """Merge the config file and the options; check that the required settings are there."""
    cfg = _load_config(args.config) if args.config else {}
    for key in ("data", "condition_key", "control", "covariate_key", "split", "out"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if args.pred:
        cfg["methods"] = {**(cfg.get("methods") or {}), **_parse_pred(args.pred)}
    if args.scdit:
        cfg.setdefault("methods", {})["scdit"] = "scdit"
    if args.baselines is not None:
        cfg["baselines"] = args.baselines
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    if args.fit_kwargs:
        try:
            extra = json.loads(args.fit_kwargs)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--fit-kwargs is not valid JSON ({exc}); give a JSON object such "
                           'as \'{"max_steps": 2000}\'.') from exc
        if not isinstance(extra, dict):
            raise CLIError(f"--fit-kwargs must be a JSON object, got {args.fit_kwargs!r}.")
        cfg["fit_kwargs"] = {**(cfg.get("fit_kwargs") or {}), **extra}
    missing = [k for k in ("data", "condition_key", "split") if not cfg.get(k)]
    if missing:
        raise CLIError(f"missing setting(s) {missing}: give them in --config or as "
                       "--data/--condition-key/--split.")
    if not cfg.get("methods"):
        raise CLIError("no method to benchmark: give --pred NAME=PATH.h5ad, --scdit, or "
                       "methods: in the config.")
    return cfg


def _benchmark(args: argparse.Namespace) -> int:
    cfg = _settings(args)
    # every input file is checked before anything is read
    data = Path(cfg["data"])
    if not data.is_file():
        kind = "is a folder, not a file" if data.is_dir() else "not found"
        raise CLIError(f"--data file {kind}: {data} (give the h5ad file with all cells).")
    split, split_params = _resolve_split(cfg["split"])
    methods = {name: m if m == "scdit" else Path(m) for name, m in cfg["methods"].items()}
    for name, m in methods.items():
        if isinstance(m, Path) and not m.is_file():
            raise CLIError(f"--pred {name}: prediction file not found: {m}.")
    adata = _read_h5ad(data, "--data")
    _check_column(adata, cfg["condition_key"], "--condition-key", cfg["data"])
    _check_column(adata, cfg.get("covariate_key"), "--covariate-key", cfg["data"])
    methods = {name: m if m == "scdit" else _read_h5ad(m, f"--pred {name}")
               for name, m in methods.items()}
    baselines = _split_list(cfg.get("baselines"))
    try:
        seeds = tuple(int(s) for s in (cfg.get("seeds") or [0]))
    except (TypeError, ValueError) as exc:
        raise CLIError(f"seeds must be integers, got {cfg.get('seeds')!r}.") from exc
    df = benchmark(
        adata, cfg["condition_key"], split=split, methods=methods,
        control=cfg.get("control"), covariate_key=cfg.get("covariate_key"), seeds=seeds,
        baselines=DEFAULT_BASELINES if baselines is None else tuple(baselines),
        out=cfg.get("out"), fit_kwargs=cfg.get("fit_kwargs"), split_params=split_params,
        evaluate_kwargs=cfg.get("evaluate"), verbose=args.verbose,
    )
    print(summarize(df).T.to_string(float_format=lambda v: f"{v:.4g}"))
    if cfg.get("out"):
        print(f"\nReport written to {cfg['out']} (report.html, report.md, metrics.csv, "
              "summary.csv).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``scdit`` argument parser (sub-command ``benchmark``)."""
    epilog = ("Errors print 'scdit: error: <message>' and exit with status 2 for bad input "
              "(missing or unreadable files, unknown columns, splits or settings) or 1 for a "
              "failure while running; --debug shows the full traceback instead.")
    parser = argparse.ArgumentParser(prog="scdit", description="scdit command-line tools.",
                                     epilog=epilog)
    parser.add_argument("--debug", action="store_true",
                        help="on error, show the Python traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("benchmark", help="score predictions beside baselines and the ceiling",
                       description="Score perturbation predictions (h5ad files and/or scdit) on "
                       "a split, beside the baselines and the split-half ceiling; write a "
                       "report.", epilog=epilog)
    b.add_argument("--config", help="YAML or JSON file with the settings below")
    b.add_argument("--data", help="h5ad file with all cells")
    b.add_argument("--condition-key", dest="condition_key", help="obs column of conditions")
    b.add_argument("--control", help="control label (default: auto-detected)")
    b.add_argument("--covariate-key", dest="covariate_key", help="obs column of contexts")
    b.add_argument("--split", help="split JSON file (Split.to_json) or a split kind name: "
                   + ", ".join(SPLIT_KINDS))
    b.add_argument("--pred", action="append", default=[], metavar="NAME=PATH",
                   help="predicted cells of a method (h5ad); repeat for several")
    b.add_argument("--scdit", action="store_true", help="also fit and score scdit (defaults)")
    b.add_argument("--fit-kwargs", dest="fit_kwargs", help="JSON dict of scdit.fit arguments")
    b.add_argument("--baselines", help="comma-separated baselines (default: all)")
    b.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0)")
    b.add_argument("--out", help="report folder")
    b.add_argument("--verbose", action="store_true", help="print progress")
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="on error, show the Python traceback instead of one line")
    b.set_defaults(func=_benchmark)
    return parser


def _message(exc: BaseException) -> str:
    """The exception's message on one line (a KeyError's without the repr quotes)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scdit`` command.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    0 when the command succeeded.

    Raises
    ------
    SystemExit
        On error, after printing ``scdit: error: <message>`` on stderr: status 2 for bad input
        (command line, settings, missing or unreadable files, unknown columns or splits: a
        ``ValueError``, ``KeyError``, ``TypeError`` or ``FileNotFoundError``), 1 for a failure
        while running. With ``--debug`` the exception propagates with its traceback.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, _INPUT_ERRORS):
            print(f"scdit: error: {_message(exc)}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        print(f"scdit: error: {type(exc).__name__}: {_message(exc)} (run again with --debug "
              "for the traceback)", file=sys.stderr)
        raise SystemExit(EXIT_FAILURE) from None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
