"""Peak RSS and cells/s of one epoch of minibatches: streamed from disk vs loaded in memory.

Each measurement runs in a fresh process (peak RSS only grows), on stores written by
``benchmarks/make_synthetic_store.py``:

* ``streamed``: :func:`scdit.data.open_cells` + :class:`scdit.data.StreamedCells` (block-shuffled,
  dense float32 batches and their row indices), one epoch;
* ``stats``: one :func:`scdit.data.gene_stats` pass (per-gene moments, row sums);
* ``memory``: ``anndata.read_h5ad`` of the whole file, then scdit's in-memory loader
  (:class:`scdit.data.CellDataset` + :func:`scdit.data.make_loader`, shuffled), one epoch;
* ``fit``: ``scdit.fit(path, "perturbation", ...)`` on the store (streamed training) for
  ``--steps`` steps of the ``--preset``;
* ``fit-memory``: ``anndata.read_h5ad`` of the whole file, then the same ``scdit.fit``.

The first three time data loading alone (no model): an upper bound of the training cells/s the
loader allows. The ``fit`` modes report the training cells/s (steps × batch / training seconds)
and, as ``setup_s``, everything else the fit does (reading, checks, statistics, tokenizer,
reference cells). Usage::

    python benchmarks/ondisk_rss.py /tmp/screen_100000.h5ad /tmp/screen_500000.h5ad \\
        --modes streamed stats memory fit fit-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _epoch(loader) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch["x"]
        n += int(x.shape[0])
    return n, time.perf_counter() - t0


def measure(mode: str, path: str, batch_size: int, block_size: int, fetch_factor: int) -> dict:
    """One measurement in this process; returns a JSON-able row."""
    import numpy as np

    from scdit.data import CellDataset, StreamedCells, gene_stats, make_loader, open_cells

    t0 = time.perf_counter()
    if mode == "streamed":
        store = open_cells(path)
        setup = time.perf_counter() - t0
        ds = StreamedCells(store, batch_size=batch_size, block_size=block_size,
                           fetch_factor=fetch_factor, seed=0)
        n, secs = _epoch(ds)
    elif mode == "stats":
        store = open_cells(path)
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        gene_stats(store)
        n, secs = store.n_obs, time.perf_counter() - t1
    elif mode == "memory":
        import anndata as ad

        adata = ad.read_h5ad(path)
        n_obs = adata.n_obs
        ds = CellDataset(adata.X, np.zeros((n_obs, 2), np.int64), np.zeros((n_obs, 0), np.int64))
        setup = time.perf_counter() - t0
        n, secs = _epoch(make_loader(ds, batch_size, shuffle=True, seed=0))
    elif mode in ("fit", "fit-memory"):
        return _fit(mode, path, batch_size)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return {"mode": mode, "path": path, "cells": n, "setup_s": round(setup, 2),
            "epoch_s": round(secs, 2), "cells_per_s": round(n / secs),
            "peak_rss_mib": round(_peak_mib())}


#: Settings of the ``fit`` modes (set from the command line).
FIT = {"steps": 400, "preset": "small"}


def _fit(mode: str, path: str, batch_size: int) -> dict:
    import scdit

    t0 = time.perf_counter()
    data = path
    if mode == "fit-memory":
        import anndata as ad

        data = ad.read_h5ad(path)
    train = scdit.TrainConfig(batch_size=batch_size, compile=False, val_every=FIT["steps"])
    model = scdit.fit(data, "perturbation", preset=FIT["preset"], max_steps=FIT["steps"],
                      train=train, seed=0, verbose=False)
    total = time.perf_counter() - t0
    s = model.summary
    return {"mode": mode, "path": path, "cells": s["n_cells"], "setup_s": round(total - s["seconds"], 1),
            "epoch_s": s["seconds"], "cells_per_s": round(s["steps"] * batch_size / s["seconds"]),
            "peak_rss_mib": round(_peak_mib()), "steps": s["steps"], "preset": FIT["preset"],
            "precision": s["precision"], "n_sample": s.get("on_disk", {}).get("n_sample"),
            "scdit": scdit.__version__, "commit": _commit()}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+")
    p.add_argument("--modes", nargs="+", default=["streamed", "stats", "memory"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--fetch-factor", type=int, default=16)
    p.add_argument("--steps", type=int, default=FIT["steps"], help="training steps (fit modes)")
    p.add_argument("--preset", default=FIT["preset"], help="DiT preset (fit modes)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    FIT.update(steps=args.steps, preset=args.preset)
    if args.one:
        row = measure(args.modes[0], args.paths[0], args.batch_size, args.block_size,
                      args.fetch_factor)
        print(json.dumps(row))
        return
    rows = []
    for path in args.paths:
        for mode in args.modes:
            cmd = [sys.executable, __file__, path, "--one", "--modes", mode,
                   "--batch-size", str(args.batch_size), "--block-size", str(args.block_size),
                   "--fetch-factor", str(args.fetch_factor), "--steps", str(args.steps),
                   "--preset", args.preset]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print("| store | mode | cells | setup s | epoch / training s | cells/s | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['path']} | {r['mode']} | {r['cells']:,} | {r['setup_s']} | {r['epoch_s']} "
              f"| {r['cells_per_s']:,} | {r['peak_rss_mib']:,} |")


if __name__ == "__main__":
    main()
