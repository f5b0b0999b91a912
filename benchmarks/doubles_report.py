"""Example: a benchmark report for held-out Norman K562 doubles with ``scdit.benchmark``.

Writes the inputs an external tool would hand over — the data (h5ad), the split (JSON) and
predicted cells (h5ad) — then scores the saved predictions with ``scdit.benchmark`` (what the
``scdit benchmark`` command runs) beside every baseline and the split-half ceiling, and writes
``report/report.md`` / ``report.html`` into ``--out``. Not a suite of ``benchmarks/run.py``: it
shows how another tool's predictions are scored.

Run: ``python benchmarks/doubles_report.py [--model reports/demo/model] [--out reports/benchmark]``
(``--model``: a model saved by ``python -m scdit.demo``; without it scdit is fitted here).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import anndata as ad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="saved scdit model trained on the same split")
    p.add_argument("--out", default="reports/benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, help="training steps when fitting here (default: fit's)")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    import scdit
    from scdit.splits import split_combinations

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = scdit.datasets.norman19_devel()
    adata = adata[adata.obs["cell_type"] == "k562"].copy()
    split = split_combinations(adata, "perturbation", seen=2, control="control", seed=args.seed)
    train, test = split.subset(adata)
    model = scdit.load(args.model) if args.model else scdit.fit(
        train, "perturbation", control="control", seed=args.seed, max_steps=args.max_steps,
        verbose=False)
    source = train[train.obs["perturbation"] == "control"]
    counts = test.obs["perturbation"].value_counts()
    # ≥ 500 generated cells per double keep the generated mean precise (as in the demo)
    pred = ad.concat([model.predict(c, n_cells=max(500, int(counts[c])), source=source,
                                    seed=args.seed + i) for i, c in enumerate(sorted(counts.index))])
    adata.write_h5ad(out / "data.h5ad")
    split.to_json(out / "split.json")
    pred.write_h5ad(out / "scdit_pred.h5ad")
    df = scdit.benchmark(str(out / "data.h5ad"), "perturbation", split=str(out / "split.json"),
                         methods={"scdit": str(out / "scdit_pred.h5ad")}, control="control",
                         seeds=(args.seed,), out=out / "report")
    print(scdit.evaluate.summarize(df).round(3).to_string())


if __name__ == "__main__":
    main()
