"""Held-out contexts without a model: does projecting the estimated effect onto the training
cells' principal axes help? (issue #4; ``scdit._context.expression_basis``)

Each context (Kang 2018 cell type, glioblastoma patient) is held out in turn. Its effect is
estimated as ``predict`` does (LOCO-chosen mean / kernel / slope, chosen on the 2,000 most
variable genes, applied to all genes with the same weights and slope) and scored by Pearson Δ
over all genes against its real effect, raw and after projection onto the top ``r`` principal
axes of the training cells' log1p expression (all genes; the held-out cells excluded), for a
grid of ``r``. ``loco_r`` is the rank a leave-one-context-out comparison on the training
contexts would pick (not used by scdit: it picked ranks that were too small). The last columns
are about the estimate's magnitude (r = 50): ``loco_scale``, the least-squares scale of the
LOCO predictions of the training contexts' effects; ``best_scale``, the one that fits the truth;
L2 errors of the mean shift, the projected estimate and the scaled one (not used by scdit:
it helped in 7 of 12 contexts only).

    python -P benchmarks/context_projection.py --kang valid.h5ad   # see benchmarks/README.md

Without ``--kang`` only the bundled glioblastoma patients are run.
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scdit._context import _linear_form, apply_effect, context_effect, pc_basis, project_effect
from scdit.tokenizers._genes import select_genes

RANKS = (5, 10, 20, 30, 50, 100)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def study(X: np.ndarray, ctx: np.ndarray, cond: np.ndarray, control: str, treated: str,
          name: str) -> pd.DataFrame:
    """One row per held-out context: Pearson Δ of the mean shift, the raw estimate and the
    projected estimate for each rank."""
    hv = np.zeros(X.shape[1], bool)
    hv[select_genes(X, [str(i) for i in range(X.shape[1])], 2000)] = True
    rows = []
    for h in sorted(set(ctx)):
        held = (ctx == h) & (cond == treated)
        others = [k for k in sorted(set(ctx)) if k != h]
        C = np.array([X[(ctx == k) & (cond == control)].mean(0) for k in others])
        E = np.array([X[(ctx == k) & (cond == treated)].mean(0) for k in others]) - C
        c = X[(ctx == h) & (cond == control)].mean(0)
        truth = X[held].mean(0) - c
        train = X[~held]
        basis = pc_basis(train[:, hv][np.isin(ctx[~held], others) & (cond[~held] == control)])
        _, info = context_effect(E[:, hv], C[:, hv], c[hv], basis=basis)
        est = apply_effect(info, E, C, c)
        axes = np.linalg.svd(train - train.mean(0), full_matrices=False)[2]
        row = {"setting": name, "held_out": h, "estimator": f"{info['method']} {info['param']}",
               "mean_shift": _pearson(E.mean(0), truth), "raw": _pearson(est, truth)}
        for r in RANKS:
            row[f"r{r}"] = _pearson(project_effect(est, axes[:r].T), truth)
        loco = {r: [] for r in RANKS}
        v50, num, den = axes[:50].T, 0.0, 0.0
        for j in range(len(others)):  # the rank a LOCO comparison would choose
            rest = np.arange(len(others)) != j
            P = (C[rest][:, hv] - basis[0]) @ basis[1]
            w, b = _linear_form(info["method"], info["param"], P, (C[j][hv] - basis[0]) @ basis[1])
            ej = w @ E[rest] + b * (C[j] - C[rest].mean(0))
            for r in RANKS:
                loco[r].append(_pearson(project_effect(ej, axes[:r].T), E[j]))
            pj = project_effect(ej, v50)  # least-squares scale of the LOCO predictions (r = 50)
            num, den = num + pj @ E[j], den + pj @ pj
        row["loco_r"] = max(RANKS, key=lambda r: np.mean(loco[r]))
        proj = project_effect(est, v50)
        row["loco_scale"], row["best_scale"] = num / den, float(proj @ truth / (proj @ proj))
        row["l2_mean_shift"] = float(np.linalg.norm(E.mean(0) - truth))
        row["l2_r50"] = float(np.linalg.norm(proj - truth))
        row["l2_r50_scaled"] = float(np.linalg.norm(num / den * proj - truth))
        rows.append(row)
        print(" ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()),
              flush=True)
    return pd.DataFrame(rows)


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def main(argv: list[str] | None = None) -> None:
    import scanpy as sc

    import scdit

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kang", help="scGen's Kang 2018 valid.h5ad (log1p; see benchmarks/README.md)")
    p.add_argument("--csv", default=None, help="write the table here")
    args = p.parse_args(argv)
    frames = []
    if args.kang:
        a = ad.read_h5ad(args.kang)
        frames.append(study(_dense(a.X), a.obs.cell_type.astype(str).to_numpy(),
                            a.obs.condition.astype(str).to_numpy(), "control", "stimulated",
                            "kang"))
    g = scdit.datasets.glioblastoma_panobinostat()
    sc.pp.normalize_total(g, target_sum=1e4)
    sc.pp.log1p(g)
    frames.append(study(_dense(g.X), g.obs.patient_id.astype(str).to_numpy(),
                        g.obs.condition.astype(str).to_numpy(), "ctrl", "panobinostat",
                        "glioblastoma"))
    out = pd.concat(frames, ignore_index=True)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(out.to_string(index=False))
    if args.csv:
        out.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
