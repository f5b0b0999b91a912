"""scdit side of the CellFlow peer comparison (runs in scdit's venv).

``prepare``: make the held-out-context splits with ``scdit.splits.split_covariate_context`` and
write, per split, the cells (log1p), the split JSON and a job JSON for ``cellflow_context.py``.

``score``: read CellFlow's decoded predictions and score them with ``scdit.evaluate`` next to its
baselines (``no_change``, ``mean`` = the mean shift of the other contexts, ``mean_cell_weighted``,
``linear``, ``ceiling``), using the split's training cells as the baselines' source. Appends to
``cellflow_results.csv`` (long format: split, context, method, condition, metric, value).

Usage::

    python benchmarks/peers/score_cellflow.py prepare WORKDIR --iterations N [--architecture A]
        [--patients PW030 PW034 ...] [--no-cellline] [--kang valid.h5ad --kang-context CD4T]
    python benchmarks/peers/score_cellflow.py score WORKDIR [--csv PATH]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sparse

import scdit
from scdit.data import to_log1p
from scdit.splits import Split, split_covariate_context

HERE = Path(__file__).resolve().parent
NORMAN = "/work/shared/data/norman19_mcfaline23_devel.h5ad"
GLIOMA_LINES = ["A172", "T98G", "U87MG"]
BASELINES = ("no_change", "mean", "mean_cell_weighted", "linear", "ceiling")
REPORTED = ("pearson_delta", "pearson_delta_de", "cosine_delta", "mse", "energy_distance",
            "mmd", "discrimination_cosine", "discrimination_l1", "discrimination_l2",
            "direction_accuracy")


def load_glioblastoma() -> ad.AnnData:
    adata = scdit.datasets.glioblastoma_panobinostat()
    adata.obs_names_make_unique()
    return adata


def load_cell_lines() -> ad.AnnData:
    adata = ad.read_h5ad(NORMAN)
    adata = adata[adata.obs["cell_type"].isin(GLIOMA_LINES)].copy()
    adata.obs_names_make_unique()
    for key in ("condition", "cell_type"):
        adata.obs[key] = adata.obs[key].astype(str)
    return adata


#: Optional Kang 2018 file (scGen's log-normalised ``valid.h5ad`` split; see benchmarks/README.md).
KANG: dict = {}


def load_kang() -> ad.AnnData:
    adata = ad.read_h5ad(KANG["path"])
    adata.obs_names_make_unique()
    for key in ("condition", "cell_type"):
        adata.obs[key] = adata.obs[key].astype(str)
    return adata


def specs(patients: list[str], cellline: bool) -> list[dict]:
    out = [dict(name=f"glioblastoma_{p}", dataset="glioblastoma", condition_key="condition",
                context_key="patient_id", control="ctrl", context=p) for p in patients]
    if cellline:
        out.append(dict(name="celllines_A172", dataset="celllines", condition_key="condition",
                        context_key="cell_type", control="control", context="A172"))
    if KANG.get("path"):
        out.append(dict(name=f"kang_{KANG['context']}", dataset="kang", condition_key="condition",
                        context_key="cell_type", control="control", context=KANG["context"],
                        path=KANG["path"]))
    return out


def load(dataset: str) -> ad.AnnData:
    if dataset == "kang":
        return load_kang()
    return load_glioblastoma() if dataset == "glioblastoma" else load_cell_lines()


def prepare(workdir: Path, patients: list[str], cellline: bool, iterations: int,
            architecture: str, batch_size: int, seed: int = 0, context_rep: str = "control_mean",
            train_seconds: float | None = None, name_suffix: str = "") -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    cache: dict[str, ad.AnnData] = {}
    jobs = []
    for spec in specs(patients, cellline):
        adata = cache.setdefault(spec["dataset"], load(spec["dataset"]))
        split = split_covariate_context(adata, spec["condition_key"], spec["context_key"],
                                        context=spec["context"], control=spec["control"])
        d = workdir / (spec["name"] + name_suffix)
        d.mkdir(exist_ok=True)
        split.to_json(d / "split.json")
        cells = adata[np.isin(adata.obs_names, np.concatenate([split.train, split.test]))]
        # CellFlow's tutorial input: normalize_total(1e4) + log1p (scdit's to_log1p does the
        # same for counts and leaves log1p data unchanged)
        out = ad.AnnData(X=sparse.csr_matrix(to_log1p(cells.X), dtype=np.float32),
                         obs=cells.obs[[spec["condition_key"], spec["context_key"]]].astype(str),
                         var=pd.DataFrame(index=cells.var_names.copy()))
        out.write_h5ad(d / "cells.h5ad", compression="gzip")  # small enough to carry
        job = dict(data=str(d / "cells.h5ad"), split=str(d / "split.json"),
                   condition_key=spec["condition_key"], context_key=spec["context_key"],
                   control=spec["control"], context=spec["context"], out=str(d / "pred.h5ad"),
                   num_iterations=iterations, batch_size=batch_size, n_comps=50, seed=seed,
                   architecture=architecture, context_rep=context_rep,
                   train_seconds=train_seconds)
        (d / "job.json").write_text(json.dumps(job, indent=1))
        (d / "spec.json").write_text(json.dumps(spec, indent=1))
        jobs.append(str(d / "job.json"))
        print(split.summary().replace("\n", " | "), "->", d)
    (workdir / "jobs.txt").write_text("\n".join(jobs) + "\n")


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else X


def score(workdir: Path, csv: Path) -> pd.DataFrame:
    frames = []
    cache: dict[str, ad.AnnData] = {}
    for spec_path in sorted(workdir.glob("*/spec.json")):
        d = spec_path.parent
        spec = json.loads(spec_path.read_text())
        if spec["dataset"] == "kang":
            KANG["path"] = spec["path"]
        if not (d / "pred.h5ad").exists():
            print("no prediction in", d)
            continue
        info = json.loads((d / "pred.h5ad.json").read_text())
        adata = cache.setdefault(spec["dataset"], load(spec["dataset"]))
        split = Split.from_json(d / "split.json")
        train, test = split.subset(adata)
        source = adata[pd.Index(split.params["source_obs_names"])]
        real = ad.concat([source, test])
        real.obs_names_make_unique()
        pred = ad.read_h5ad(d / "pred.h5ad")
        # PCA reconstruction is unclipped (as in CellFlow's tutorials); scdit.evaluate refuses
        # negative expression, so negative values are set to 0 and their share recorded
        X = np.asarray(pred.X.toarray() if sparse.issparse(pred.X) else pred.X, np.float32)
        clipped = float((X < 0).mean())
        pred.X = np.clip(X, 0, None)
        kw = dict(control=spec["control"], train=train, covariate_key=spec["context_key"],
                  method_name="cellflow")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = scdit.evaluate(pred, real, spec["condition_key"], baselines=BASELINES, **kw)
        except Exception as err:  # linear baseline may not apply; retry without it
            print(f"{d.name}: evaluate with linear failed ({err}); retrying without it")
            df = scdit.evaluate(pred, real, spec["condition_key"],
                                baselines=tuple(b for b in BASELINES if b != "linear"), **kw)
        df.insert(0, "context", spec["context"])
        df.insert(0, "split", spec["dataset"])
        df["cellflow_iterations"] = info["num_iterations"]
        df["cellflow_architecture"] = info["architecture"]
        df["cellflow_context_rep"] = info.get("context_rep", "control_mean")
        df["cellflow_negative_clipped"] = round(clipped, 4)
        df["cellflow_scored_clipped"] = True  # rows before 2026-12-04 were scored unclipped
        df["cellflow_devices"] = ",".join(info.get("devices", []))
        df["cellflow_train_seconds"] = round(info["seconds_train"], 1)
        df["cellflow_seed"] = int(json.loads((d / "job.json").read_text()).get("seed", 0))
        frames.append(df.drop(columns=["covariate"]))
    res = pd.concat(frames, ignore_index=True)
    if csv.exists():  # keep the rows of other splits/contexts already there
        old = pd.read_csv(csv, dtype={"scdit_version": str, "git_commit": str})
        for col, default in (("cellflow_context_rep", "control_mean"),
                             ("cellflow_devices", "cpu:0"),
                             ("cellflow_scored_clipped", False)):
            if col not in old:  # rows written before these were recorded
                old[col] = default
        if "cellflow_seed" not in old:
            old["cellflow_seed"] = 0  # rows written before seeds were recorded: seed 0
        old["cellflow_seed"] = old["cellflow_seed"].fillna(0).astype(int)
        key = ["split", "context", "cellflow_seed", "cellflow_architecture",
               "cellflow_context_rep", "cellflow_iterations"]
        for frame in (old, res):  # integers as read and as written ("2000", not "2000.0")
            frame["cellflow_iterations"] = frame["cellflow_iterations"].astype("Int64")
        done = set(map(tuple, res[key].astype(str).to_numpy()))
        keep = [tuple(r) not in done for r in old[key].astype(str).to_numpy()]
        res = pd.concat([old[keep], res], ignore_index=True)
    res.to_csv(csv, index=False)
    summary(res)
    return res


def summary(res: pd.DataFrame) -> None:
    sub = res[res["metric"].isin(REPORTED)]
    wide = (sub.groupby(["split", "context", "cellflow_architecture", "cellflow_context_rep",
                         "cellflow_iterations",
                         "cellflow_scored_clipped", "method", "metric"],
                        sort=False)["value"].mean().unstack("metric"))
    wide = wide[[m for m in REPORTED if m in wide.columns]]
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.float_format", "{:.3f}".format):
        print(wide)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="cmd", required=True)
    a = sp.add_parser("prepare")
    a.add_argument("workdir", type=Path)
    a.add_argument("--iterations", type=int, required=True)
    a.add_argument("--architecture", default="tutorial", choices=["tutorial", "small"])
    a.add_argument("--batch-size", type=int, default=1024)
    a.add_argument("--patients", nargs="*", default=["PW030", "PW034"])
    a.add_argument("--no-cellline", action="store_true")
    a.add_argument("--kang", help="Kang 2018 h5ad (condition control/stimulated, cell_type)")
    a.add_argument("--kang-context", default="CD4T", help="cell type held out")
    a.add_argument("--seed", type=int, default=0, help="CellFlow's training seed")
    a.add_argument("--context-rep", default="control_mean", choices=["control_mean", "onehot"],
                   help="context as the mean of its control cells in PCA space, or one-hot")
    a.add_argument("--train-seconds", type=float, help="wall-time cap on CellFlow's training")
    a.add_argument("--name-suffix", default="", help="appended to each split's folder name")
    b = sp.add_parser("score")
    b.add_argument("workdir", type=Path)
    b.add_argument("--csv", type=Path, default=HERE / "cellflow_results.csv")
    args = p.parse_args()
    if args.cmd == "prepare":
        KANG.update(path=args.kang, context=args.kang_context)
        prepare(args.workdir, args.patients, not args.no_cellline, args.iterations,
                args.architecture, args.batch_size, args.seed, args.context_rep,
                args.train_seconds, args.name_suffix)
    else:
        score(args.workdir, args.csv)
