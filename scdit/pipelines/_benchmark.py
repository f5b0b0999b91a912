"""``scdit.benchmark``: score several perturbation models on one split, beside baselines and ceiling."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData

from .. import api, splits
from ..data import detect_control
from ..evaluate import ALL_BASELINES, evaluate
from ._report import write_report

#: Baselines :func:`benchmark` reports by default (all of them).
DEFAULT_BASELINES: tuple[str, ...] = ALL_BASELINES
#: Split kinds accepted by name (``scdit.splits.split_<kind>``).
SPLIT_KINDS: tuple[str, ...] = (
    "unseen_perturbations", "combinations", "covariate_context", "dose", "random_cells",
)
#: A method: a callable ``(train, test_conditions, source) -> AnnData``, an AnnData of
#: predicted cells, a path to an h5ad file of them, or ``"scdit"`` (fit scdit with defaults).
Method = Callable[..., AnnData] | AnnData | str | Path
_REAL = "__real__"


def resolve_split(split, adata: AnnData, condition_key: str, *, seed: int = 0,
                  covariate_key: str | None = None, control: str | None = None,
                  params: Mapping | None = None):
    """A :class:`~scdit.splits.Split` from a Split, a JSON path, or a split kind name.

    A kind name (see :data:`SPLIT_KINDS`) calls ``scdit.splits.split_<kind>(adata,
    condition_key, seed=seed, **params)`` (``covariate_context`` also gets ``covariate_key``).
    The leakage check is always run.
    """
    params = dict(params or {})
    if isinstance(split, splits.Split):
        out = split
    elif isinstance(split, (str, Path)) and str(split) in SPLIT_KINDS:
        fn = getattr(splits, f"split_{split}")
        if split == "covariate_context":
            params.setdefault("covariate_key", covariate_key)
        if control is not None:
            params.setdefault("control", control)
        out = fn(adata, condition_key, seed=seed, **params)
    elif isinstance(split, (str, Path)) and Path(split).is_file():
        out = splits.Split.from_json(split)
    else:
        raise ValueError(f"split must be a Split, a split JSON file or one of {SPLIT_KINDS}; "
                         f"got {split!r}.")
    splits.check_leakage(out, adata, condition_key)
    return out


def _predict(name: str, method: Method, train: AnnData, conditions: list[str], source: AnnData,
             *, condition_key: str, control: str, covariate_key: str | None, seed: int,
             fit_kwargs: Mapping | None, n_cells: int | None, verbose: bool) -> AnnData:
    if isinstance(method, AnnData):
        return method
    if isinstance(method, str) and method == "scdit":
        kw = {"control": control, "seed": seed, "verbose": verbose, **dict(fit_kwargs or {})}
        if covariate_key is not None:
            kw.setdefault("covariate_keys", [covariate_key])
        model = api.fit(train, condition_key, **kw)
        return model.predict(conditions, n_cells=n_cells, source=source, seed=seed)
    if isinstance(method, (str, Path)):
        path = Path(method)
        if not path.is_file():
            raise FileNotFoundError(f"Prediction file of method {name!r} not found: {path}.")
        return ad.read_h5ad(path)
    if callable(method):
        params = inspect.signature(method).parameters
        extra = {"seed": seed} if "seed" in params else {}
        out = method(train, conditions, source, **extra)
        if not isinstance(out, AnnData):
            raise TypeError(f"Method {name!r} returned {type(out).__name__}, not AnnData.")
        return out
    raise TypeError(f"Method {name!r}: expected a callable, AnnData, h5ad path or 'scdit'; got "
                    f"{type(method).__name__}.")


def _real_and_source(adata, split, condition_key, control):
    """Test cells of non-control conditions + real control cells, and the source cells."""
    train_mask, test_mask = split.masks(adata)
    labels = adata.obs[condition_key].astype(str).to_numpy()
    is_ctrl = labels == control
    src_names = split.params.get("source_obs_names")
    if src_names:
        src_mask = np.asarray(pd.Index(adata.obs_names).isin(src_names))
    else:
        src_mask = train_mask & is_ctrl
        if not src_mask.any():
            src_mask = is_ctrl & ~test_mask
    real_ctrl = test_mask & is_ctrl if (test_mask & is_ctrl).any() else src_mask
    real = adata[(test_mask & ~is_ctrl) | real_ctrl].copy()
    source = adata[src_mask].copy()
    if source.n_obs == 0:
        raise ValueError("The split leaves no control cells to predict from.")
    return real, source, adata[train_mask].copy()


def benchmark(
    adata: AnnData | str | Path,
    condition_key: str,
    *,
    split,
    methods: Mapping[str, Method],
    control: str | None = None,
    covariate_key: str | None = None,
    seeds: Sequence[int] = (0,),
    baselines: Sequence[str] = DEFAULT_BASELINES,
    out: str | Path | None = None,
    fit_kwargs: Mapping | None = None,
    split_params: Mapping | None = None,
    n_cells: int | None = None,
    evaluate_kwargs: Mapping | None = None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Score perturbation models on a split, next to the baselines and the split-half ceiling.

    For each seed: the split is resolved (a kind name is redrawn with the seed), every method
    predicts the test conditions from the source cells (the split's ``source_obs_names``, else
    the training control cells), and :func:`scdit.evaluate` scores each prediction against the real
    test cells (with the real control cells), the baselines' effects coming from the training
    cells. Predictions of other tools given as h5ad files are scored beside scdit.

    Parameters
    ----------
    adata
        All cells (AnnData or h5ad path), counts or log1p.
    condition_key
        ``obs`` column with the condition labels.
    split
        A :class:`~scdit.splits.Split`, a path to its JSON, or a kind name (see
        :func:`resolve_split`; arguments in ``split_params``).
    methods
        Name → method: ``"scdit"`` (fit with ``fit_kwargs`` and predict), a callable
        ``(train_adata, test_conditions, source_cells[, seed=]) -> AnnData``, an AnnData or an
        h5ad path of predicted cells (labelled in ``obs[condition_key]``).
    control
        Control label (auto-detected if None).
    covariate_key
        Context column (cell type, ...), as in :func:`scdit.evaluate`.
    seeds
        One run per seed (seeds the split kind, scdit's fit and sampling, the metrics'
        subsampling and the ceiling's halves).
    baselines
        Baselines to report (default all: no_change, mean, mean_cell_weighted, additive,
        linear, ceiling).
    out
        If given, :func:`write_report` writes the report there (plots from the last seed).
    fit_kwargs, split_params
        Keyword arguments of :func:`scdit.fit` and of the split function.
    n_cells
        Cells per predicted condition for ``"scdit"`` (default: the number of source cells).
    evaluate_kwargs
        Further keyword arguments of :func:`scdit.evaluate` (``top_k_de``, ``n_pcs``, ...).
    verbose
        Print progress (and scdit's training output).

    Returns
    -------
    Tidy DataFrame ``seed, method, condition, covariate, metric, value``; ``attrs`` hold the
    metric definitions and settings (with the split summary).
    """
    if isinstance(adata, (str, Path)):
        adata = ad.read_h5ad(adata)
    if not methods:
        raise ValueError("methods is empty: pass at least one method (e.g. {'scdit': 'scdit'}).")
    clash = [m for m in methods if m in ALL_BASELINES or m == _REAL]
    if clash:
        raise ValueError(f"Method names {clash} clash with baseline names.")
    control = detect_control(adata.obs[condition_key], control)
    ekw = dict(evaluate_kwargs or {})
    frames, attrs, last = [], {}, None
    for seed in seeds:
        sp = resolve_split(split, adata, condition_key, seed=int(seed),
                           covariate_key=covariate_key, control=control, params=split_params)
        real, source, train = _real_and_source(adata, sp, condition_key, control)
        conds = sorted(set(real.obs[condition_key].astype(str)) - {control})
        common = dict(control=control, train=train, covariate_key=covariate_key,
                      seed=int(seed), **ekw)
        if baselines:
            base = evaluate(real, real, condition_key, baselines=tuple(baselines),
                            method_name=_REAL, **common)
            attrs = base.attrs
            frames.append(base[base["method"] != _REAL].assign(seed=int(seed)))
        preds = {}
        for name, method in methods.items():
            if verbose:
                print(f"[benchmark] seed {seed}: {name}")
            preds[name] = _predict(name, method, train, conds, source,
                                   condition_key=condition_key, control=control,
                                   covariate_key=covariate_key, seed=int(seed),
                                   fit_kwargs=fit_kwargs, n_cells=n_cells, verbose=verbose)
            df = evaluate(preds[name], real, condition_key, baselines=(), method_name=name,
                          **common)
            attrs = attrs or df.attrs
            frames.append(df.assign(seed=int(seed)))
        last = (preds, real, train, sp)
    out_df = pd.concat(frames, ignore_index=True)
    out_df = out_df[["seed", "method", "condition", "covariate", "metric", "value"]]
    order = list(methods) + [b for b in baselines if b in set(out_df["method"])]
    out_df = out_df.iloc[np.argsort(out_df["method"].map(order.index).to_numpy(),
                                    kind="stable")].reset_index(drop=True)
    out_df.attrs = {"definitions": attrs.get("definitions", {}),
                    "settings": {**attrs.get("settings", {}), "seeds": list(map(int, seeds)),
                                 "split": last[3].summary().replace("\n", "; ")}}
    if out is not None:
        preds, real, train, _ = last
        write_report(out_df, out, predictions=preds, real=real, train=train,
                     condition_key=condition_key, control=control, covariate_key=covariate_key)
    return out_df
