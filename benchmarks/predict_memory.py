"""Peak memory of ``model.predict`` for growing numbers of cells (one subprocess per size).

A tiny model is fitted once on a synthetic counts screen (``--genes`` genes, ``--modelled`` of
them modelled by the genes tokenizer, the rest carried over from reference cells) and saved;
each size then runs in a fresh process that loads the model, warms it up with a small
prediction, resets its peak-RSS counter (``/proc/self/clear_refs``) and predicts ``n`` cells of
one perturbation. It prints the loaded model's RSS, the peak RSS during ``predict``, their
difference and the size of the output matrix (CSR data + indices + indptr).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/predict_memory.py
    .venv/bin/python benchmarks/predict_memory.py --cells 2000 20000 --effects always
    .venv/bin/python benchmarks/predict_memory.py --model /tmp/m   # reuse a saved model

Linux only (reads ``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only).")


def _reset_peak() -> bool:
    """Reset the peak RSS (``VmHWM``) to the current RSS; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def fit_model(path: Path, n_genes: int, n_modelled: int, representation: str) -> None:
    """Fit and save a tiny model on a synthetic screen."""
    import scdit
    from scdit.data import counts_to_log1p
    from scdit.datasets import synthetic_perturbation

    adata, _ = synthetic_perturbation(n_genes=n_genes, n_perturbations=4, n_combinations=1,
                                      n_cells_per_condition=60, n_control=200, seed=0)
    if representation == "log1p":
        adata.X = counts_to_log1p(adata.X)
    model = scdit.fit(adata, "perturbation", covariate_keys=["cell_type"], preset="tiny",
                      tokenizer=scdit.TokenizerConfig(n_top_genes=n_modelled), max_steps=5,
                      seed=0, verbose=False)
    model.save(path, overwrite=True)


def child(path: str, n_cells: int, label: str | None, effects: str, batch_size: int,
          unmodelled: str = "decode") -> dict:
    """Load the model, predict ``n_cells`` cells once, return the memory figures."""
    import numpy as np

    import scdit

    model = scdit.load(path)
    label = label or next(c for c in model.vocab.conditions if c != model.vocab.control
                          and model.vocab.separator not in c)
    sampling = scdit.SamplingConfig(batch_size=batch_size, steps=2, unmodelled_genes=unmodelled)
    model.predict(label, n_cells=64, seed=1, effects=effects, sampling=sampling)  # warm-up
    loaded = _status("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    out = model.predict(label, n_cells=n_cells, seed=0, effects=effects, sampling=sampling)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    X = out.X
    output = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return {"cells": n_cells, "genes": out.n_vars, "label": label, "effects": effects,
            "mean_set_by": str(out.uns["scdit"]["mean_set_by"]), "dtype": str(X.dtype),
            "loaded_gib": loaded / GIB, "peak_gib": peak / GIB, "above_loaded_gib":
            (peak - loaded) / GIB, "output_gib": output / GIB, "peak_reset": reset,
            "seconds": seconds, "finite": bool(np.isfinite(X.data).all())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, nargs="+", default=[2000, 20000, 200000])
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--modelled", type=int, default=1500, help="genes modelled by the tokenizer")
    p.add_argument("--representation", choices=["counts", "log1p"], default="counts")
    p.add_argument("--effects", default="auto", help="predict(effects=...)")
    p.add_argument("--label", default=None, help="perturbation (default: a seen single)")
    p.add_argument("--batch-size", type=int, default=2048, help="SamplingConfig.batch_size")
    p.add_argument("--unmodelled-genes", default="decode", choices=["decode", "carry"],
                   help="SamplingConfig.unmodelled_genes (matters where the generator sets the "
                   "mean, e.g. --effects none)")
    p.add_argument("--model", default=None, help="saved model directory (fitted if absent)")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.label, a.effects, a.batch_size,
                               a.unmodelled_genes)))
        return
    tmp = tempfile.TemporaryDirectory()
    path = Path(a.model or Path(tmp.name) / "model")
    if not (path / "config.json").exists():
        fit_model(path, a.genes, a.modelled, a.representation)
    print(f"{'cells':>8} {'loaded GiB':>10} {'peak GiB':>9} {'above GiB':>9} "
          f"{'output GiB':>10} {'seconds':>8}")
    for n in a.cells:
        cmd = [sys.executable, __file__, "--child", str(path), str(n), "--effects", a.effects,
               "--batch-size", str(a.batch_size), "--unmodelled-genes", a.unmodelled_genes] \
            + (["--label", a.label] if a.label else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"{n:>8} failed:\n{res.stderr[-2000:]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{n:>8} {r['loaded_gib']:>10.3f} {r['peak_gib']:>9.3f} "
              f"{r['above_loaded_gib']:>9.3f} {r['output_gib']:>10.3f} {r['seconds']:>8.1f}  "
              f"{r['label']} {r['mean_set_by']} reset={r['peak_reset']}", flush=True)


if __name__ == "__main__":
    main()
