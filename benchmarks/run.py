"""Run scdit's maintained benchmark suites and write their results tables.

Usage::

    python benchmarks/run.py                       # every suite, full mode (hours on a CPU)
    python benchmarks/run.py --quick               # every suite, quick mode (minutes): `make bench`
    python benchmarks/run.py quality --settings glioblastoma_patients --seeds 0 1 2
    python benchmarks/run.py speed --threads 1 --out /tmp/bench

Suites: ``quality`` (scdit, the generator alone and the baselines on the bundled settings),
``speed`` (training / sampling throughput, FLOP/s vs the matmul peak, metric panel),
``tokenizers`` (genes, pca, scvi) and ``fewstep`` (1-8 Euler steps vs the default solver).
Each suite's rows are appended to ``OUT/<suite>.csv`` (quick mode: ``OUT/<suite>_quick.csv``,
``OUT`` defaulting to ``benchmarks/results`` and ``benchmarks/results/quick``); every row records
the scdit version, git commit, date, machine, suite, setting, held-out unit, method and seed.
A summary per suite is printed and written next to the table (``.md``). The exit status is 1
when any unit failed (the others still run).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SUITES = ("quality", "speed", "tokenizers", "fewstep")


def _suite(name: str):
    return importlib.import_module(f"suites.{name}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="*", metavar="suite",
                   help=f"suites to run (default: all of {', '.join(SUITES)})")
    p.add_argument("--quick", action="store_true",
                   help="tiny fits, few steps, small subsets: checks that everything runs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    p.add_argument("--out", type=Path, help="folder of the tables (default: benchmarks/results, "
                   "quick mode benchmarks/results/quick)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--list", action="store_true", help="list the units that would run, and stop")
    for name in SUITES:
        _suite(name).add_arguments(p)
    args = p.parse_args(argv)
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        p.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    args.suites = args.suites or list(SUITES)
    if args.out is None:
        args.out = HERE / "results" / ("quick" if args.quick else "")
    return args


def run_suite(name: str, args: argparse.Namespace) -> tuple[int, int]:
    """Run every unit × seed of one suite; returns ``(units run, units failed)``."""
    from suites.common import append_table, markdown, provenance, summary_table, with_provenance

    suite = _suite(name)
    units = suite.units(args.quick, args)
    table = args.out / f"{name}{'_quick' if args.quick else ''}.csv"
    prov = provenance(name)
    done, failed, rows = 0, 0, []
    for setting, unit, fn in units:
        for seed in args.seeds:
            label = f"{name}/{setting}/{unit}/seed {seed}"
            print(f"== {label}", flush=True)
            t0 = time.perf_counter()
            try:
                out = fn(seed)
            except Exception:  # report, keep going with the other units
                failed += 1
                print(f"!! {label} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                continue
            done += 1
            if "seed" not in out:
                out["seed"] = seed
            out = with_provenance(out, prov)
            append_table(out, table)
            rows.append(out)
            print(f"   {time.perf_counter() - t0:.1f} s, {len(out)} rows -> {table}", flush=True)
    if rows:
        import pandas as pd

        summary = summary_table(pd.concat(rows, ignore_index=True), suite.SUMMARY)
        text = (f"# {name}{' (quick)' if args.quick else ''}: {prov['date']}, scdit "
                f"{prov['scdit_version']}, commit {prov['git_commit'][:12]}"
                f"{' (uncommitted changes)' if prov['git_dirty'] == 'yes' else ''}\n\n"
                f"{prov['machine']}\n\n{markdown(summary)}\n")
        table.with_suffix(".md").write_text(text)
        print("\n" + text, flush=True)
    return done, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in args.suites:
            for setting, unit, _ in _suite(name).units(args.quick, args):
                print(f"{name}\t{setting}\t{unit}")
        return 0
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # the tokenizer suite's subprocesses
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    totals = {name: run_suite(name, args) for name in args.suites}
    failed = sum(f for _, f in totals.values())
    for name, (done, f) in totals.items():
        print(f"{name}: {done} unit(s) done, {f} failed")
    print(f"benchmarks {'(quick) ' if args.quick else ''}finished in "
          f"{time.perf_counter() - t0:.0f} s; tables in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
