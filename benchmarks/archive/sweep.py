"""Run many ``benchmarks/generalise.py`` jobs in parallel (e.g. on a GPU machine) under a deadline.

Each line of ``--jobs`` is one argument list for ``generalise.py`` (``--csv`` is added). Jobs run
``--workers`` at a time, each writing its own CSV; after every finished job all rows so far are
gathered into ``--out`` (so a run cut short still leaves its results). Jobs still running at
``--deadline`` seconds are killed and listed. Example::

    python benchmarks/sweep.py --jobs jobs.txt --workers 8 --deadline 500 --out sweep.csv
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def gather(parts: list[Path], out: Path) -> int:
    frames = [pd.read_csv(p) for p in parts if p.exists() and p.stat().st_size > 0]
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return sum(len(f) for f in frames)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", required=True, help="file with one generalise.py argument list per line")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--deadline", type=float, default=3600.0, help="seconds")
    p.add_argument("--threads", type=int, default=2, help="OMP threads per job")
    p.add_argument("--out", default="sweep.csv")
    p.add_argument("--logs", default=None, help="folder for each job's log")
    args = p.parse_args(argv)
    lines = [ln.strip() for ln in Path(args.jobs).read_text().splitlines()]
    jobs = [shlex.split(ln) for ln in lines if ln and not ln.startswith("#")]
    tmp = Path(tempfile.mkdtemp(prefix="sweep_"))
    logs = Path(args.logs) if args.logs else tmp
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    script = Path(__file__).with_name("generalise.py")
    t0 = time.time()
    pending = list(enumerate(jobs))
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    parts = [tmp / f"job{i:03d}.csv" for i in range(len(jobs))]
    while pending or running:
        while pending and len(running) < args.workers:
            i, job = pending.pop(0)
            cmd = [sys.executable, "-P", str(script), *job, "--csv", str(parts[i])]
            log = open(logs / f"job{i:03d}.log", "w")  # noqa: SIM115 - closed with the process
            running[i] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                          time.time())
            print(f"[{time.time() - t0:6.0f}s] start {i}: {' '.join(job)}", flush=True)
        for i, (proc, started) in list(running.items()):
            if proc.poll() is not None:
                del running[i]
                n = gather(parts, Path(args.out))
                print(f"[{time.time() - t0:6.0f}s] done {i} rc={proc.returncode} "
                      f"({time.time() - started:.0f}s; {n} rows)", flush=True)
                if proc.returncode != 0:
                    tail = (logs / f"job{i:03d}.log").read_text().splitlines()[-25:]
                    print("\n".join(tail), flush=True)
                    if n == 0:  # nothing has worked yet: stop rather than burn the deadline
                        for proc2, _ in running.values():
                            proc2.kill()
                        sys.exit(f"job {i} failed before any job succeeded; aborting")
        if time.time() - t0 > args.deadline:
            for i, (proc, _) in running.items():
                proc.kill()
                print(f"killed {i} at the deadline: {' '.join(jobs[i])}", flush=True)
            for i, job in pending:
                print(f"not started {i}: {' '.join(job)}", flush=True)
            break
        time.sleep(2)
    print(f"{gather(parts, Path(args.out))} rows in {args.out}", flush=True)


if __name__ == "__main__":
    main()
