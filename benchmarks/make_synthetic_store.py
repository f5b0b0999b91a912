"""Write a synthetic perturbation screen of any size to disk, in row blocks (issue #19).

Counts are negative binomial (gamma-Poisson): each gene has a log-normal base mean and a
dispersion, each cell a log-normal size factor, and each of the ``--perturbations``
perturbations knocks down its target gene and shifts a handful of downstream genes. About 10% of
the cells are controls (label ``control``); the rest are spread evenly over the perturbations.

The file is an AnnData store (``.h5ad`` with a CSR ``X``, or a ``.zarr`` directory) with
``obs["perturbation"]`` (categorical) and gene names ``G00000``, ``G00001``, ... as
``var_names``. It is written block by block through anndata's own on-disk API (``write_elem`` of
the first block with resizable datasets, then ``sparse_dataset(...).append`` for ``X`` and an
append on each ``obs`` array), so that writing needs memory proportional to ``--block`` rows, not
to ``--cells``.

Usage::

    python benchmarks/make_synthetic_store.py --cells 2000000 --genes 2000 \\
        --perturbations 500 --out /tmp/screen_2m.h5ad
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr

CONTROL = "control"
CONTROL_FRACTION = 0.1


def _design(n_genes: int, n_perts: int, rng: np.random.Generator) -> dict:
    """Per-gene base means and dispersions, and each perturbation's log fold changes (sparse)."""
    base = rng.lognormal(mean=-1.0, sigma=1.5, size=n_genes).clip(1e-3, 50.0)
    theta = rng.lognormal(mean=0.5, sigma=0.5, size=n_genes)  # NB shape (inverse dispersion)
    targets = rng.choice(n_genes, size=n_perts, replace=n_perts > n_genes)
    lfc = np.zeros((n_perts + 1, n_genes), dtype=np.float32)  # row 0: control
    for p in range(n_perts):
        lfc[p + 1, targets[p]] = -2.0  # knock-down of the target gene
        down = rng.choice(n_genes, size=min(10, n_genes), replace=False)
        lfc[p + 1, down] += rng.normal(0.0, 0.7, size=down.size)
    return {"base": base, "theta": theta, "targets": targets, "lfc": lfc}


def _labels(n_cells: int, n_perts: int, rng: np.random.Generator) -> np.ndarray:
    """Condition codes (0 = control, p = perturbation p) for ``n_cells`` cells."""
    is_ctrl = rng.random(n_cells) < CONTROL_FRACTION
    codes = rng.integers(1, n_perts + 1, size=n_cells)
    codes[is_ctrl] = 0
    return codes.astype(np.int16 if n_perts < 32_000 else np.int32)


def _counts(codes: np.ndarray, design: dict, rng: np.random.Generator) -> sp.csr_matrix:
    """NB counts for one block of cells, as float32 CSR."""
    size = rng.lognormal(0.0, 0.3, size=(codes.size, 1))
    mu = size * design["base"][None, :] * np.exp(design["lfc"][codes])
    theta = design["theta"][None, :]
    lam = rng.gamma(theta, mu / theta)
    counts = rng.poisson(lam).astype(np.float32)
    return sp.csr_matrix(counts)


def _append(array, values: np.ndarray) -> None:
    """Append ``values`` to a resizable 1-d h5py dataset or zarr array."""
    if isinstance(array, h5py.Dataset):
        n = array.shape[0]
        array.resize((n + values.shape[0],))
        array[n:] = values
    else:
        array.append(values)


def write_store(
    out: str | Path,
    *,
    cells: int,
    genes: int = 2000,
    perturbations: int = 500,
    fmt: str | None = None,
    seed: int = 0,
    block: int = 4096,
    verbose: bool = True,
) -> Path:
    """Write a synthetic screen of ``cells`` × ``genes`` NB counts to ``out`` in row blocks.

    Parameters
    ----------
    out
        Path of the store; ``fmt`` defaults to its suffix (``.h5ad`` or ``.zarr``).
    cells, genes, perturbations
        Size of the screen (``perturbations`` plus one control condition).
    fmt
        ``"h5ad"`` or ``"zarr"``.
    seed
        Seed of the design and the counts (the same seed and sizes give the same file).
    block
        Rows generated and written at a time: memory is proportional to ``block × genes``.
    verbose
        Print progress.

    Returns
    -------
    The path written.
    """
    out = Path(out)
    fmt = fmt or ("zarr" if out.suffix == ".zarr" else "h5ad")
    if fmt not in ("h5ad", "zarr"):
        raise ValueError(f"fmt must be 'h5ad' or 'zarr', got {fmt!r}")
    if cells < 1 or genes < 1 or perturbations < 1:
        raise ValueError("cells, genes and perturbations must be positive")
    rng = np.random.default_rng(seed)
    design = _design(genes, perturbations, rng)
    var_names = pd.Index([f"G{i:05d}" for i in range(genes)])
    categories = [CONTROL] + [f"{var_names[t]}_{p}" for p, t in enumerate(design["targets"])]
    var = pd.DataFrame({"base_mean": design["base"]}, index=var_names)

    if fmt == "h5ad":
        root = h5py.File(out, "w")
        obs_kwargs = {"maxshape": (None,)}  # anndata makes the sparse X datasets resizable itself
    else:
        root = zarr.open_group(out, mode="w", zarr_format=2)
        obs_kwargs = {}
    t0 = time.perf_counter()
    try:
        root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        ad.io.write_elem(root, "var", var)
        ad.io.write_elem(root, "uns", {"control": CONTROL, "synthetic_seed": seed})
        for key in ("obsm", "varm", "obsp", "varp", "layers"):
            ad.io.write_elem(root, key, {})
        for start in range(0, cells, block):
            stop = min(start + block, cells)
            codes = _labels(stop - start, perturbations, rng)
            X = _counts(codes, design, rng)
            obs = pd.DataFrame(
                {"perturbation": pd.Categorical.from_codes(codes, categories=categories)},
                index=pd.Index([f"c{i}" for i in range(start, stop)]),
            )
            if start == 0:
                ad.io.write_elem(root, "obs", obs, dataset_kwargs=obs_kwargs)
                ad.io.write_elem(root, "X", X)
                X_on_disk = ad.io.sparse_dataset(root["X"])
            else:
                _append(root["obs"]["_index"], obs.index.to_numpy(dtype=object))
                _append(root["obs"]["perturbation"]["codes"], codes)
                X_on_disk.append(X)
            if verbose and (start // block) % 25 == 0:
                print(f"  {stop:,} / {cells:,} cells, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
    finally:
        if fmt == "h5ad":
            root.close()
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--perturbations", type=int, default=500)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("h5ad", "zarr"), default=None,
                   help="default: from the suffix of --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block", type=int, default=4096, help="rows written at a time")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = write_store(args.out, cells=args.cells, genes=args.genes,
                      perturbations=args.perturbations, fmt=args.format, seed=args.seed,
                      block=args.block, verbose=not args.quiet)
    print(f"wrote {out} ({args.cells:,} cells x {args.genes:,} genes, "
          f"{args.perturbations} perturbations + control) in {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
