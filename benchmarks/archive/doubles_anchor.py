"""Held-out Norman K562 doubles: plain vs anchored predictions of saved (or freshly fitted) models.

Three predictions per model: plain (``anchor=False``), anchored to the raw training means
(``anchor=True, shrink=False``) and anchored to the empirical-Bayes shrunk training effects
(``anchor=True, shrink=True``, the library default for these doubles); ``--interaction`` uses
``anchor="interaction"`` (adds the model's generated interaction; one more ODE solve per member
and control) for both anchored predictions. Baselines: additive and additive_shrunk.

``predict(..., anchor=True)`` shifts the generated cells of an unseen combination ``A+B`` so that
their mean is the additive estimate from the training means of ``A``, ``B`` and control plus the
interaction the model generates (its ``A+B`` minus its own ``A``, ``B`` and control, integrated
from the same noise). This script scores both predictions of each model on the demo split
(``scdit.demo.load_data``: ``split_combinations(seen=2)``, 5 held-out doubles, 500 generated
cells each, sources = training controls) beside the additive baseline, for several sampling
seeds, and prints one table (mean over doubles per model × seed) plus the per-double Pearson Δ.

Usage::

    python -P benchmarks/doubles_anchor.py --models reports/demo/model --seeds 0 100
    python -P benchmarks/doubles_anchor.py --fit-seeds 0 1 2 --max-steps 1000 --csv out.csv
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

METRICS = ("pearson_delta", "pearson_delta_de", "energy_distance")
# (anchor, shrink) -> method name in the table
VARIANTS = {(False, False): "scdit", (True, False): "scdit_anchor_raw",
            (True, True): "scdit_anchor_shrunk"}


def score_model(model, name: str, train, test, seeds, n_cells: int,
                compose: float | None = None, interaction: bool = False) -> pd.DataFrame:
    from scdit.demo import CONDITION_KEY, CONTROL
    from scdit.evaluate import evaluate

    source = train[train.obs[CONDITION_KEY] == CONTROL].copy()
    real = ad.concat([test, source], merge="same")
    held = sorted(test.obs[CONDITION_KEY].unique())
    rows = []
    for seed in seeds:
        for anchor, shrink in VARIANTS:
            t0 = time.perf_counter()
            how = "interaction" if anchor and interaction else anchor
            parts = [model.predict(c, n_cells=n_cells, source=source, seed=seed + i, anchor=how,
                                   shrink=shrink, compose=compose)
                     for i, c in enumerate(held)]
            pred = ad.concat(parts, merge="same")
            pred.obs_names_make_unique()
            secs = time.perf_counter() - t0
            df = evaluate(pred, real, CONDITION_KEY, control=CONTROL, train=train, seed=seed,
                          baselines=("additive", "additive_shrunk") if not rows else ())
            df = df[df["metric"].isin(METRICS)].copy()
            df.loc[df["method"] == "scdit", "method"] = (VARIANTS[(anchor, shrink)]
                                                         + ("_interaction" if how == "interaction" else ""))
            df["model"], df["sampling_seed"], df["predict_s"] = name, seed, round(secs, 1)
            df["compose"] = "model default" if compose is None else compose
            rows.append(df)
    return pd.concat(rows, ignore_index=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[], help="saved models trained on the demo split")
    p.add_argument("--fit-seeds", nargs="*", type=int, default=None,
                   help="fit new models with these seeds (default: 0 when no --models)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps of new models")
    p.add_argument("--seeds", nargs="*", type=int, default=[0], help="sampling seeds")
    p.add_argument("--n-cells", type=int, default=500, help="generated cells per double")
    p.add_argument("--compose", type=float, default=None,
                   help="composition weight for the doubles (default: the model's, 1.0)")
    p.add_argument("--interaction", action="store_true",
                   help='anchor="interaction" for the anchored predictions')
    p.add_argument("--csv", default=None, help="write the long table here")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import scdit
    from scdit.demo import CONDITION_KEY, CONTROL, load_data

    if args.fit_seeds is None:
        args.fit_seeds = [] if args.models else [0]
    _, _, train, test = load_data(0)
    frames = []
    for path in args.models:
        frames.append(score_model(scdit.load(path), path, train, test, args.seeds, args.n_cells,
                                  args.compose, args.interaction))
    for s in args.fit_seeds:
        model = scdit.fit(train, CONDITION_KEY, control=CONTROL, seed=s, max_steps=args.max_steps,
                          verbose=False, max_minutes=None)
        frames.append(score_model(model, f"fit seed {s} ({model.summary['steps']} steps)", train,
                                  test, args.seeds, args.n_cells, args.compose, args.interaction))
    df = pd.concat(frames, ignore_index=True)
    if args.csv:
        df.to_csv(args.csv, index=False)
    means = (df.groupby(["model", "sampling_seed", "method", "metric"])["value"].mean()
             .unstack("metric").reset_index())
    print(means.round(4).to_string(index=False))
    per = df[df["metric"] == "pearson_delta"].pivot_table(
        index=["model", "sampling_seed", "method"], columns="condition", values="value")
    print(per.round(3).to_string())


if __name__ == "__main__":
    main()
