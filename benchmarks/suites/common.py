"""What every benchmark suite shares: the fit / predict calls, provenance columns, table output.

All model calls of the suites go through :func:`fit_model` and :func:`predict_cells`, so that a
change of scdit's keyword arguments is a change here, in one line each (marked ``API LINE``).
Only scdit's public API is used.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]

#: Columns every results table starts with, in this order.
PROVENANCE = ("scdit_version", "git_commit", "git_dirty", "date", "machine", "suite",
              "setting", "holdout", "method", "seed")

#: Quick mode: DiT preset, training steps and ODE steps of every fit / prediction.
QUICK_PRESET = "tiny"
QUICK_STEPS = 40
QUICK_SAMPLING_STEPS = 5


def fit_model(train: ad.AnnData, condition_key: str, *, control: str | None, seed: int,
              quick: bool, covariate_keys: Sequence[str] = (), tokenizer: str = "genes",
              tokenizer_options: dict | None = None, max_steps: int | None = None,
              preset: str | None = None, budget: bool = True, backbone: str = "dit",
              train_options: dict | None = None):
    """``scdit.fit`` with its defaults (full mode) or a tiny, short fit (quick mode).

    Parameters
    ----------
    train
        Training cells.
    condition_key, control, covariate_keys, seed
        As in ``scdit.fit``.
    quick
        Tiny preset, :data:`QUICK_STEPS` steps and no time budget.
    tokenizer, tokenizer_options
        Tokenizer name and its options (``None``: the tokenizer's defaults).
    max_steps, preset
        Override the training length / DiT preset of either mode.
    budget
        Leave ``max_minutes`` to ``scdit.fit`` (default; it has no wall-time budget by default,
        so the fit trains its whole schedule); ``False`` passes ``max_minutes=None``
        explicitly, which makes no difference with the current defaults.
    backbone
        Velocity network: ``"dit"`` (default) or ``"mlp"`` (the preset's sizes with
        ``DiTConfig.backbone="mlp"``).
    train_options
        Fields of ``scdit.TrainConfig`` to set (e.g. ``{"precision": "32-true"}``); fields this
        scdit's ``TrainConfig`` lacks are dropped (see :func:`config_fields`).

    Returns
    -------
    scdit.ScDiT
        The fitted model.
    """
    import scdit

    kw: dict = {"covariate_keys": tuple(covariate_keys), "seed": seed, "verbose": False}
    if quick:
        kw.update(preset=QUICK_PRESET, max_steps=QUICK_STEPS, max_minutes=None)
    if max_steps is not None:
        kw["max_steps"] = max_steps
    if not budget:
        kw["max_minutes"] = None
    if preset is not None:
        kw["preset"] = preset
    if backbone != "dit":  # API LINE: the preset's sizes with another backbone
        name = kw.pop("preset", "small")
        kw["dit"] = dataclasses.replace(scdit.config.DIT_PRESETS[name], backbone=backbone)
    if tokenizer != "genes" or tokenizer_options:  # API LINE: tokenizer kind and options
        kw["tokenizer"] = scdit.TokenizerConfig(kind=tokenizer, **(tokenizer_options or {}))
    if train_options:  # API LINE: TrainConfig fields (precision, compile, ...)
        kw["train"] = {k: v for k, v in train_options.items() if k in config_fields("train")}
    return scdit.fit(train, condition_key, control=control, **kw)


def config_fields(kind: str) -> frozenset[str]:
    """Field names of this scdit's ``TrainConfig`` (``"train"``) or ``SamplingConfig``
    (``"sampling"``), so that a suite can use a newer field where it exists."""
    import scdit

    cls = {"train": scdit.TrainConfig, "sampling": scdit.SamplingConfig}[kind]
    return frozenset(f.name for f in dataclasses.fields(cls))


def predict_kwargs(*, generator_only: bool, quick: bool, sampling: dict | None = None) -> dict:
    """Keyword arguments of ``model.predict`` for the default or the generator alone.

    ``generator_only=True`` is the generator without any effect estimate setting its mean.
    ``sampling``: fields of ``scdit.SamplingConfig`` (e.g. ``{"steps": 4, "solver": "euler"}``;
    fields this scdit lacks are dropped); given, it replaces quick mode's few steps.
    """
    import scdit

    if sampling is not None:  # API LINE: explicit sampling settings
        fields = config_fields("sampling")
        cfg = {"sampling": scdit.SamplingConfig(**{k: v for k, v in sampling.items()
                                                   if k in fields})}
    else:
        cfg = {"sampling": scdit.SamplingConfig(steps=QUICK_SAMPLING_STEPS)} if quick else {}
    return {"effects": "none" if generator_only else "auto", **cfg}  # API LINE


def predict_cells(model, conditions: Iterable[str], n_cells: dict[str, int] | int,
                  source: ad.AnnData | None, *, seed: int, quick: bool,
                  generator_only: bool = False, representation: str | None = None,
                  sampling: dict | None = None) -> ad.AnnData:
    """Predict each condition (seeded ``seed + i``) and concatenate the cells.

    Parameters
    ----------
    model
        A fitted scdit model.
    conditions
        Condition labels to generate.
    n_cells
        Cells per condition (one number, or one per condition).
    source
        Source cells (their context, library sizes and unmodelled genes), or ``None``.
    seed
        Base sampling seed.
    quick
        Few ODE steps.
    generator_only
        The generator alone, without effect estimates (see :func:`predict_kwargs`).
    representation
        Output representation (``None``: the training one).
    sampling
        Fields of ``scdit.SamplingConfig`` (see :func:`predict_kwargs`); ``None``: the model's
        default sampling (quick mode: :data:`QUICK_SAMPLING_STEPS` steps).

    Returns
    -------
    anndata.AnnData
        The generated cells of all conditions.
    """
    kw = predict_kwargs(generator_only=generator_only, quick=quick, sampling=sampling)
    if representation is not None:
        kw["representation"] = representation
    parts = []
    for i, cond in enumerate(conditions):
        n = n_cells[cond] if isinstance(n_cells, dict) else n_cells
        parts.append(model.predict(cond, n_cells=int(n), source=source, seed=seed + i, **kw))
    out = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
    out.obs_names_make_unique()
    return out


# --------------------------------------------------------------------------- provenance
def git_commit() -> tuple[str, str]:
    """``(commit, dirty)`` of the repository holding the benchmarks; ``"unknown"`` without git.

    ``dirty`` is ``"yes"`` when ``scdit/`` or ``benchmarks/`` has uncommitted changes.
    """
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                 "scdit", "benchmarks"], capture_output=True, text=True,
                                timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return head or "unknown", "yes" if status.strip() else "no"


def machine() -> str:
    """One line: CPU or GPU name, torch version and CPU threads."""
    import torch

    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    else:
        dev = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                dev = next((ln.split(":", 1)[1].strip() for ln in fh
                            if ln.startswith("model name")), dev)
        except OSError:
            pass
    return (f"{dev}; {os.cpu_count()} CPUs; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def provenance(suite: str) -> dict[str, str]:
    """The provenance columns shared by every row of one run of ``suite``."""
    import scdit

    commit, dirty = git_commit()
    return {"scdit_version": scdit.__version__, "git_commit": commit, "git_dirty": dirty,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(), "suite": suite}


def with_provenance(rows: pd.DataFrame, prov: dict[str, str]) -> pd.DataFrame:
    """``rows`` with the provenance columns first (missing row columns filled with ``"-"``)."""
    rows = rows.copy()
    for col in PROVENANCE:
        if col in prov:
            rows[col] = prov[col]
        elif col not in rows:
            rows[col] = "-"
    rest = [c for c in rows.columns if c not in PROVENANCE]
    return rows[list(PROVENANCE) + rest]


def append_table(rows: pd.DataFrame, path: Path) -> Path:
    """Append ``rows`` to the CSV at ``path`` (columns united with those already there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        # the provenance columns are text: a commit such as "5e49673413844c97..." or "1234567"
        # would otherwise be parsed as a number (pandas 2.3's C parser crashed on the first)
        old = pd.read_csv(path, dtype={c: str for c in PROVENANCE if c != "seed"},
                          float_precision="round_trip")  # rows kept digit for digit
        rows = pd.concat([old, rows], ignore_index=True)
        rows = rows[list(PROVENANCE) + [c for c in rows.columns if c not in PROVENANCE]]
    rows.to_csv(path, index=False)
    return path


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's ``VmHWM`` where available: ``getrusage``'s maximum is inherited by a child process
    from its parent at fork, so it would report the parent's peak in a fresh subprocess.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux ``/proc/self/clear_refs``), so that
    :func:`peak_rss_mib` reports the peak from now on; ``False`` where that is not possible
    (the peak then stays the process's peak so far)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A small GitHub table of ``df`` (no extra dependency)."""
    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "—" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def summary_table(rows: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean (± SD over seeds where several) of ``metrics`` per setting, holdout and method."""
    metrics = [m for m in metrics if m in rows]
    keys = ["setting", "holdout", "method"]
    g = rows.groupby(keys, sort=False)[metrics]
    mean, sd, n = g.mean(), g.std(), g.size()
    out = mean.copy().astype(object)
    for m in metrics:
        out[m] = [(f"{a:.3f} ± {s:.3f}" if k > 1 and not np.isnan(s) else
                   ("—" if np.isnan(a) else f"{a:.3f}"))
                  for a, s, k in zip(mean[m], sd[m], n, strict=True)]
    out["seeds"] = n
    return out.reset_index()


def norman_doubles_split() -> tuple[ad.AnnData, ad.AnnData]:
    """``(train, test)`` of the bundled Norman K562 cells with the doubles whose two singles
    were both seen held out (``split_combinations(seen=2)``, the demo split)."""
    from scdit.splits import split_combinations

    a = norman_k562()
    split = split_combinations(a, "perturbation", seen=2, control="control", seed=0)
    return split.subset(a)


def norman_k562() -> ad.AnnData:
    """The K562 cells of the bundled Norman subset, labels as strings, unique names."""
    import scdit

    a = scdit.datasets.norman19_devel()
    a = a[a.obs["cell_type"].astype(str) == "k562"].copy()
    a.obs["perturbation"] = a.obs["perturbation"].astype(str)
    a.obs_names_make_unique()
    return a
