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
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..evaluate import summarize
from ._benchmark import DEFAULT_BASELINES, benchmark


def _load_config(path: str) -> dict:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        cfg = json.loads(text)
    else:
        import yaml

        cfg = yaml.safe_load(text) or {}
    if not isinstance(cfg, dict):
        raise SystemExit(f"error: config {path} must be a mapping of settings.")
    base = p.resolve().parent

    def rel(v):
        return str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v

    for key in ("data", "out"):
        if cfg.get(key) is not None:
            cfg[key] = rel(cfg[key])
    split = cfg.get("split")
    if isinstance(split, str) and (base / split).is_file():
        cfg["split"] = rel(split)
    elif isinstance(split, dict) and "path" in split:
        cfg["split"] = rel(split["path"])
    methods = cfg.get("methods") or {}
    cfg["methods"] = {k: v if v == "scdit" else rel(v) for k, v in methods.items()}
    return cfg


def _parse_pred(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: --pred expects NAME=PATH.h5ad, got {item!r}.")
        out[name] = path
    return out


def _split_list(v) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return list(v)


def _benchmark(args: argparse.Namespace) -> int:
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
        cfg["fit_kwargs"] = {**(cfg.get("fit_kwargs") or {}), **json.loads(args.fit_kwargs)}
    missing = [k for k in ("data", "condition_key", "split") if not cfg.get(k)]
    if missing:
        raise SystemExit(f"error: missing setting(s) {missing} (give them in --config or as "
                         "--data/--condition-key/--split).")
    if not cfg.get("methods"):
        raise SystemExit("error: no method to benchmark: give --pred NAME=PATH.h5ad, --scdit, "
                         "or methods: in the config.")
    split = cfg["split"]
    split_params = None
    if isinstance(split, dict):
        split_params = {k: v for k, v in split.items() if k not in ("kind", "seed")}
        split = split["kind"]
    baselines = _split_list(cfg.get("baselines"))
    df = benchmark(
        cfg["data"], cfg["condition_key"], split=split, methods=cfg["methods"],
        control=cfg.get("control"), covariate_key=cfg.get("covariate_key"),
        seeds=tuple(int(s) for s in (cfg.get("seeds") or [0])),
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
    parser = argparse.ArgumentParser(prog="scdit", description="scdit command-line tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("benchmark", help="score predictions beside baselines and the ceiling",
                       description="Score perturbation predictions (h5ad files and/or scdit) on "
                       "a split, beside the baselines and the split-half ceiling; write a "
                       "report.")
    b.add_argument("--config", help="YAML or JSON file with the settings below")
    b.add_argument("--data", help="h5ad file with all cells")
    b.add_argument("--condition-key", dest="condition_key", help="obs column of conditions")
    b.add_argument("--control", help="control label (default: auto-detected)")
    b.add_argument("--covariate-key", dest="covariate_key", help="obs column of contexts")
    b.add_argument("--split", help="split JSON file (Split.to_json) or a split kind name")
    b.add_argument("--pred", action="append", default=[], metavar="NAME=PATH",
                   help="predicted cells of a method (h5ad); repeat for several")
    b.add_argument("--scdit", action="store_true", help="also fit and score scdit (defaults)")
    b.add_argument("--fit-kwargs", dest="fit_kwargs", help="JSON dict of scdit.fit arguments")
    b.add_argument("--baselines", help="comma-separated baselines (default: all)")
    b.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0)")
    b.add_argument("--out", help="report folder")
    b.add_argument("--verbose", action="store_true", help="print progress")
    b.set_defaults(func=_benchmark)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scdit`` command; returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
