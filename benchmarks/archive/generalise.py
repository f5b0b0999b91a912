"""Generalisation benchmarks (issue #4): held-out context, held-out doubles, unseen singles.

Each run fits scdit on a split of a bundled real dataset, predicts the held-out cells and scores
them with :func:`scdit.evaluate` beside the baselines. Settings:

* ``patient``: glioblastoma slices (Zhao 2021), one patient's panobinostat cells held out and
  predicted from that patient's control cells (covariate ``patient_id``);
* ``cellline``: the three glioma lines of McFaline-Figueroa 2023 (9 CRISPRi perturbations),
  one line's perturbed cells held out and predicted from its control cells (``cell_type``);
* ``doubles``: Norman 2019 K562 doubles whose singles were both seen (``split_combinations``);
* ``modules``: unseen single CRISPRi perturbations of measured genes on a *simulated* screen with
  gene programmes (:func:`module_screen`): knocking a gene down lowers it and shifts its
  programme (25 % of perturbations held out); the real counterpart is ``papalexi``.

* ``papalexi``: unseen single CRISPR knock-outs on the bundled Papalexi 2021 THP-1 screen
  (:func:`scdit.datasets.papalexi21_thp1`; ``--holdout A,B,C``, default 25 % of the 9 targets
  that are measured genes), a *real* screen with measured targets.
* ``context`` / ``screen``: your own h5ad (``--data``, ``--condition-key``, ``--control``, and
  for ``context`` ``--covariate-key``): a held-out covariate value predicted from its control
  cells (e.g. Kang 2018 with ``--holdout "CD4 T cells"``), or unseen perturbations of a screen
  (``--holdout A,B,C``; default: 25 % of the perturbations whose target is a measured gene).

Rows are appended to ``--csv`` (one per setting × held-out × variant × seed × method) and a table
of the main metrics is printed. Example::

    python benchmarks/generalise.py --setting patient --holdout PW030 --variants noise control
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

METRICS = ["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1", "mse"]

#: Named variants: keyword arguments of scdit.fit.
VARIANTS = {
    "noise": {"source": "noise"},
    "control": {"source": "control"},
    "control_nocov": {"source": "control", "covariate_keys": ()},
    "noise_nofeat": {"source": "noise", "perturbation_features": False},
    "noise_2000": {"source": "noise", "max_steps": 2000},
    "control_2000": {"source": "control", "max_steps": 2000},
    "noise_noprior": {"source": "noise", "predict": {"target_prior": False}},
    "control_sn05": {"flow": {"source": "control", "source_noise": 0.5}},
    "default": {},
    "default_300": {"max_steps": 300},
    "default_ens3": {"ensemble": 3},
    "noise_4000": {"source": "noise", "max_steps": 4000},
    "noise_8000": {"source": "noise", "max_steps": 8000},
    "noise_2000_ens3": {"source": "noise", "max_steps": 2000, "ensemble": 3},
    "default_1000": {"max_steps": 1000},
    "nocenter": {"flow": {"source": "control", "center": False}},
}


def module_screen(n_genes: int = 300, n_modules: int = 10, n_perts: int = 60,
                  cells_per_pert: int = 80, n_control: int = 600, seed: int = 0) -> ad.AnnData:
    """Negative-binomial CRISPRi screen with gene programmes (log-normal cell factors).

    Gene ``g`` belongs to programme ``m(g)`` with loading ``l_g``; a cell's log mean is
    ``b_g + l_g z_{m(g)} + ε``, ``z ~ N(0, 1)`` per cell and programme, so genes of a programme
    co-vary. Knocking down target ``t`` multiplies it by ``exp(-2)`` and shifts its programme's
    factor by ``-1.2 sign(l_t)``, plus idiosyncratic effects ``N(0, 0.3²)`` on 3 % of genes.
    """
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.0, n_genes) + 0.5
    module = rng.integers(0, n_modules, n_genes)
    load_ = rng.uniform(0.4, 1.0, n_genes) * rng.choice([-1, 1], n_genes)
    expressed = np.argsort(-b)[: n_genes // 2]
    targets = rng.choice(expressed, n_perts, replace=False)
    names = [f"G{g:03d}" for g in range(n_genes)]
    labels, mus = [], []

    def cells(n, shift_z=None, target=None, idio=None):
        z = rng.normal(0, 1, (n, n_modules))
        if shift_z is not None:
            z = z + shift_z
        logmu = b + load_ * z[:, module] + rng.normal(0, 0.2, (n, n_genes))
        if idio is not None:
            logmu = logmu + idio
        if target is not None:
            logmu[:, target] -= 2.0
        return logmu

    mus.append(cells(n_control))
    labels += ["control"] * n_control
    for t in targets:
        sz = np.zeros(n_modules)
        sz[module[t]] = -1.2 * np.sign(load_[t])
        idio = np.zeros(n_genes)
        hit = rng.random(n_genes) < 0.03
        idio[hit] = rng.normal(0, 0.3, hit.sum())
        mus.append(cells(cells_per_pert, sz, t, idio))
        labels += [names[t]] * cells_per_pert
    logmu = np.vstack(mus)
    mu = np.exp(logmu)
    mu = mu / mu.sum(1, keepdims=True) * rng.lognormal(np.log(3000), 0.3, (len(mu), 1))
    r = 10.0
    X = rng.negative_binomial(r, r / (r + mu)).astype(np.float32)
    obs = pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=names))


#: User data for the ``context`` / ``screen`` settings (set from the command line).
USER: dict = {}


def load(setting: str) -> tuple[ad.AnnData, str, str, str | None]:
    """(adata, condition_key, control, covariate_key) of a setting."""
    import scdit

    if setting in ("context", "screen"):
        if not USER.get("data"):
            raise SystemExit(f"--setting {setting} needs --data, --condition-key and --control.")
        a = ad.read_h5ad(USER["data"])
        key, cov = USER["condition_key"], USER.get("covariate_key")
        a.obs[key] = a.obs[key].astype(str)
        if setting == "context":
            if not cov:
                raise SystemExit("--setting context needs --covariate-key.")
            a.obs[cov] = a.obs[cov].astype(str)
            return a, key, USER["control"], cov
        return a, key, USER["control"], None
    if setting == "modules":
        return module_screen(), "condition", "control", None
    if setting == "papalexi":
        a = scdit.datasets.papalexi21_thp1()
        a.obs["perturbation"] = a.obs["perturbation"].astype(str)
        return a, "perturbation", "control", None
    if setting == "patient":
        a = scdit.datasets.glioblastoma_panobinostat()
        return a, "condition", "ctrl", "patient_id"
    a = scdit.datasets.norman19_devel()
    a.obs["condition"] = a.obs["condition"].astype(str)
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    if setting == "cellline":
        a = a[a.obs["cell_type"].isin(["A172", "T98G", "U87MG"])].copy()
        return a, "condition", "control", "cell_type"
    if setting == "doubles":
        a = a[a.obs["cell_type"] == "k562"].copy()
        a.obs_names_make_unique()
        return a, "condition", "control", None
    raise ValueError(f"unknown setting {setting!r}")


def make_split(setting, adata, key, control, holdout, seed):
    from scdit.splits import split_combinations, split_covariate_context, split_unseen_perturbations

    if setting == "modules":
        return split_unseen_perturbations(adata, key, fraction=0.25, control=control, seed=seed)
    if setting in ("screen", "papalexi"):  # comma-separated perturbations, else 25 % of those with a measured target
        if holdout:
            held = holdout.split(",")
        else:
            measured = sorted(set(adata.obs[key]) & set(adata.var_names) - {control})
            rng = np.random.default_rng(seed)
            held = list(rng.choice(measured, max(1, len(measured) // 4), replace=False))
        return split_unseen_perturbations(adata, key, held_out=held, control=control, seed=seed)
    if setting == "doubles":
        return split_combinations(adata, key, seen=2, control=control, seed=seed)
    cov = {"patient": "patient_id", "context": USER.get("covariate_key")}.get(setting, "cell_type")
    return split_covariate_context(adata, key, cov, context=holdout, control=control)


def run_one(setting: str, holdout: str | None, variant: str, seed: int, min_cells: int,
            max_steps: int | None, max_minutes: float | None, verbose: bool,
            calibrate: tuple[str, ...] = ()) -> pd.DataFrame:
    import scdit
    from scdit.evaluate import evaluate, summarize

    adata, key, control, cov = load(setting)
    split = make_split(setting, adata, key, control, holdout, seed)
    train, test = split.subset(adata)
    kw = {"covariate_keys": (cov,) if cov else (), "max_steps": max_steps, **VARIANTS[variant]}
    predict_kw = kw.pop("predict", {})
    n_models = kw.pop("ensemble", 1)
    if "flow" in kw:
        from scdit._config import FlowConfig

        kw["flow"] = FlowConfig(**kw["flow"])
    t0 = time.perf_counter()
    # An ensemble pools the cells predicted by n_models fits with different seeds.
    models = [scdit.fit(train, key, control=control, seed=seed + 1000 * j, verbose=verbose,
                        max_minutes=max_minutes, **kw) for j in range(n_models)]
    t_fit = time.perf_counter() - t0
    if cov:
        src_names = split.params["source_obs_names"]
        source = adata[adata.obs_names.isin(src_names)].copy()
    else:
        source = train[train.obs[key] == control].copy()
    counts = test.obs[key].value_counts()
    t0 = time.perf_counter()

    def predict_all(**extra):
        parts = []
        for i, c in enumerate(sorted(counts.index)):
            n = max(min_cells, int(counts[c]), source.n_obs if cov else 0)
            sizes = [n // n_models + (j < n % n_models) for j in range(n_models)]
            parts += [m.predict(c, n_cells=k, source=source, seed=seed + i + 7919 * j,
                                **predict_kw, **extra)
                      for j, (m, k) in enumerate(zip(models, sizes, strict=True))]
        out = ad.concat(parts, merge="same")
        out.obs_names_make_unique()
        if cov and cov not in out.obs:  # a model fitted without the covariate (e.g. control_nocov)
            out.obs[cov] = str(source.obs[cov].iloc[0])
        return out

    pred = predict_all()
    t_pred = time.perf_counter() - t0
    real = ad.concat([test, source], merge="same")
    real.obs_names_make_unique()
    baselines = ("no_change", "mean", "context_shift") if cov else ("no_change", "mean",
                                                                       "additive", "linear")
    df = evaluate(pred, real, key, control=control, train=train, covariate_key=cov, seed=seed,
                  baselines=baselines)
    def score(name: str, **extra) -> pd.DataFrame:
        """Rows of one more prediction of the same models, scored as method ``name``."""
        rows = evaluate(predict_all(**extra), real, key, control=control, train=train,
                        covariate_key=cov, seed=seed, baselines=(), method_name=name)
        return rows[rows["method"] == name]

    is_counts = models[0].representation == "counts"  # also score its log1p output
    modes = calibrate if models[0].config.flow.source == "control" else ()
    extras = [("scdit_log1p", {"representation": "log1p"})] if is_counts else []
    if cov:  # the plain model, without the default held-out-context anchoring
        extras.append(("scdit_noanchor", {"anchor": False}))
    for mode in modes:  # drift-calibrated predictions, and their log1p output for counts models
        extras.append((f"scdit_cal{mode}", {"calibrate": mode}))
        if is_counts:
            extras.append((f"scdit_cal{mode}_log1p", {"calibrate": mode, "representation": "log1p"}))
    df = pd.concat([df, *(score(name, **kw) for name, kw in extras)], ignore_index=True)
    s = summarize(df)
    s = s[[m for m in METRICS if m in s.columns]].copy()
    s.index.name = "method"
    s = s.reset_index()
    s.insert(0, "seed", seed)
    s.insert(0, "variant", variant)
    s.insert(0, "holdout", holdout or {"doubles": "seen2", "modules": "25%",
                                       "screen": "25%", "papalexi": "25%"}.get(setting, "-"))
    s.insert(0, "setting", setting)
    s["fit_s"] = round(t_fit, 1)
    s["predict_s"] = round(t_pred, 1)
    s["steps"] = models[0].summary.get("steps")
    return s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", required=True,
                   choices=["patient", "cellline", "doubles", "modules", "context", "screen",
                            "papalexi"])
    p.add_argument("--data", help="h5ad file for --setting context / screen")
    p.add_argument("--condition-key", default="condition")
    p.add_argument("--control", default="control")
    p.add_argument("--covariate-key", help="covariate whose --holdout value is held out (context)")
    p.add_argument("--holdout", nargs="*", default=[None])
    p.add_argument("--variants", nargs="+", default=["noise", "control"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--min-cells", type=int, default=500)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=14.0)
    p.add_argument("--csv", default="benchmarks/generalise.csv")
    p.add_argument("--calibrate", nargs="*", default=[], choices=["mean", "cell"],
                   help="also score drift-calibrated predictions (control-source models)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    USER.update(data=args.data, condition_key=args.condition_key, control=args.control,
                covariate_key=args.covariate_key)
    warnings.filterwarnings("ignore")
    out = Path(args.csv)
    for holdout in args.holdout:
        for seed in args.seeds:
            for variant in args.variants:
                s = run_one(args.setting, holdout, variant, seed, args.min_cells, args.max_steps,
                            args.max_minutes, args.verbose, tuple(args.calibrate))
                s.to_csv(out, mode="a", header=not out.exists(), index=False)
                with pd.option_context("display.width", 200, "display.max_columns", 20):
                    print(s.round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
