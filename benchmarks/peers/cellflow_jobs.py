"""Run several ``cellflow_context.py`` jobs in one process (one JAX start-up), e.g. on a GPU lease.

Runs in CellFlow's environment and does not import scdit. Each job JSON is the one written by
``score_cellflow.py prepare``; its predictions and timings go to ``OUTDIR/<job folder>_pred.h5ad``
(and ``.json``) instead of the job's own ``out``, so that a remote run can send them back in one
folder. ``--train-seconds`` overrides every job's wall-time cap on training (the iterations
actually run are recorded in the ``.json``)::

    python benchmarks/peers/cellflow_jobs.py OUTDIR JOB.json [JOB.json ...] [--train-seconds S]

Copy each ``*_pred.h5ad`` (and its ``.json``) back to the job's folder as ``pred.h5ad`` and
``pred.h5ad.json`` before ``score_cellflow.py score``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cellflow_context import run  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("outdir", type=Path)
    p.add_argument("jobs", nargs="+", type=Path)
    p.add_argument("--train-seconds", type=float)
    args = p.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    names = [path.parent.name for path in args.jobs]
    if len(set(names)) < len(names):
        p.error(f"job folders must have distinct names (outputs are named after them): {names}")
    failed = 0
    for path in args.jobs:
        job = json.loads(path.read_text())
        job["out"] = str(args.outdir / f"{path.parent.name}_pred.h5ad")
        if args.train_seconds:
            job["train_seconds"] = args.train_seconds
        t0 = time.time()
        print(f"== {path.parent.name}: {job.get('architecture')} / "
              f"{job.get('context_rep', 'control_mean')}, cap {job.get('train_seconds')} s",
              flush=True)
        try:
            info = run(job)
        except Exception:  # keep going: the other jobs' results still come back
            traceback.print_exc()
            failed += 1
            continue
        keys = ("devices", "num_iterations", "stopped_by_cap", "seconds_train", "seconds_total",
                "seconds_per_iteration", "loss_first_100", "loss_last_100", "n_params")
        print(json.dumps({k: info.get(k) for k in keys}), f"wall {time.time() - t0:.0f}s",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
