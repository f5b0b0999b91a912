"""Train/test splits for perturbation prediction, each verified by :func:`check_leakage`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ._labels import detect_control, split_label
from ._labels import preview as _preview
from ._setup import condition_labels
from ._split_base import LeakageError, Split, _isin, _obs_column, check_leakage

__all__ = [
    "LeakageError", "Split", "check_leakage", "random_cells", "split_combinations",
    "split_covariate_context", "split_dose", "split_random_cells", "split_unseen_perturbations",
]


def _prepare(adata: AnnData, condition_key: str, control: str | None, separator: str
             ) -> tuple[np.ndarray, str, dict[str, tuple[str, ...]]]:
    labels = condition_labels(adata, condition_key).to_numpy()
    if not adata.obs_names.is_unique:
        raise ValueError("adata.obs_names are not unique; call adata.obs_names_make_unique().")
    control = detect_control(labels, control)
    members = {c: split_label(c, control, separator) for c in np.unique(labels) if c != control}
    return labels, control, members


def _known(requested: str | Sequence[str], available: Sequence[str], control: str,
           what: str = "held_out") -> list[str]:
    req = [requested] if isinstance(requested, str) else [str(r) for r in requested]
    if control in req:
        raise ValueError(f"{what} contains the control label {control!r}; controls stay in train.")
    unknown = [r for r in req if r not in set(available)]
    if unknown:
        raise ValueError(f"{what} names unknown condition labels {unknown}; available: "
                         f"{_preview(available)}.")
    if not req:
        raise ValueError(f"{what} is empty.")
    return sorted(set(req))


def _n_of(fraction: float, n: int, name: str = "fraction") -> int:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {fraction}.")
    return min(n, max(1, int(np.floor(fraction * n + 0.5))))


def _stratified(positions: np.ndarray, strata: np.ndarray, fraction: float,
                rng: np.random.Generator) -> np.ndarray:
    """Pick ``fraction`` of ``positions`` within each stratum, leaving at least one behind."""
    picked: list[np.ndarray] = []
    groups = pd.Series(strata[positions]).groupby(strata[positions], sort=True).indices
    for _, idx in sorted(groups.items()):
        n = min(len(idx) - 1, int(np.floor(fraction * len(idx) + 0.5)))
        if n > 0:
            picked.append(rng.choice(positions[idx], size=n, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def _finish(adata: AnnData, labels: np.ndarray, condition_key: str, test: np.ndarray, *,
            kind: str, params: dict, held_out: list[str], context: dict | None,
            control: str, separator: str, seed: int, val_fraction: float,
            drop: np.ndarray | None = None, strata_key: str | None = None) -> Split:
    """Build the Split (train = rest minus ``drop``), carve val, check leakage."""
    train = ~test if drop is None else ~test & ~drop
    val = np.zeros(0, dtype=int)
    if val_fraction:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        strata = labels.astype(object)
        if strata_key is not None:
            strata = strata + "\x1f" + _obs_column(adata, strata_key).astype(str).to_numpy()
        val = _stratified(np.flatnonzero(train), strata, val_fraction,
                          np.random.default_rng([seed, 1]))
        train[val] = False
    names = np.asarray(adata.obs_names)
    params = {"condition_key": condition_key, "control": control, "separator": separator,
              "seed": seed, "val_fraction": val_fraction, **params}
    split = Split(train=names[train], test=names[test], val=names[val] if val_fraction else None,
                  kind=kind, params=params, held_out_conditions=held_out, held_out_context=context)
    if len(split.test) == 0:
        raise ValueError(f"The {kind} split has no test cells; check its arguments.")
    check_leakage(split, adata, condition_key, separator=separator)
    return split


def split_unseen_perturbations(
    adata: AnnData, condition_key: str, *, held_out: str | Sequence[str] | None = None,
    fraction: float = 0.2, control: str | None = None, separator: str = "+", seed: int = 0,
    val_fraction: float = 0.0,
) -> Split:
    """Hold out whole perturbations: every cell of a held-out condition goes to test.

    Parameters
    ----------
    adata
        Cells with condition labels in ``adata.obs[condition_key]``.
    condition_key
        ``adata.obs`` column with condition labels.
    held_out
        Condition labels to hold out; None draws ``fraction`` of the non-control conditions.
    fraction
        Share of non-control conditions to hold out when ``held_out`` is None (at least one).
    control
        Control label; auto-detected (``control``, ``ctrl``, ``non-targeting``, ...) if None.
    separator
        Separator of combination labels.
    seed
        Seed of the random draws (the split is deterministic given it).
    val_fraction
        Share of each training condition carved into a validation set.

    Returns
    -------
    Split
        ``kind="unseen_perturbations"``.
    """
    labels, control, members = _prepare(adata, condition_key, control, separator)
    conds = sorted(members)
    if held_out is None:
        rng = np.random.default_rng(seed)
        held = sorted(rng.choice(conds, size=_n_of(fraction, len(conds)), replace=False).tolist())
    else:
        held = _known(held_out, conds, control)
    return _finish(adata, labels, condition_key, np.isin(labels, held),
                   kind="unseen_perturbations", params={"fraction": fraction}, held_out=held,
                   context=None, control=control, separator=separator, seed=seed,
                   val_fraction=val_fraction)


def _assign(m: tuple[str, ...], level: int, out: set[str], keep: set[str],
            rng: np.random.Generator) -> bool:
    """Hold out members of ``m`` so exactly ``level`` stay trained; False if impossible."""
    free = [g for g in m if g not in out and g not in keep]
    n_keep = level - sum(g in keep for g in m)
    if not 0 <= n_keep <= len(free):
        return False
    kept = set(rng.choice(free, size=n_keep, replace=False).tolist()) if n_keep else set()
    keep |= kept
    out |= set(free) - kept
    return True


def split_combinations(
    adata: AnnData, condition_key: str, *, seen: int | Sequence[int] = 2,
    fraction: float | None = None, held_out: Sequence[str] | None = None, mode: str = "gears",
    control: str | None = None, separator: str = "+", seed: int = 0, val_fraction: float = 0.0,
) -> Split:
    """Hold out combinations (``"A+B"``) grouped by how many of their members were trained on.

    A combination's *seen count* is the number of its members whose single perturbation is in
    train. ``seen=2`` holds out doubles whose singles both stay in train; ``seen=1`` also holds
    out one of the singles; ``seen=0`` both. A held-out single is an unseen gene: every condition
    containing it leaves train (to test when its seen count is requested, otherwise dropped).

    Parameters
    ----------
    adata
        Cells with condition labels in ``adata.obs[condition_key]``.
    condition_key
        ``adata.obs`` column with condition labels.
    seen
        Seen count(s) of the held-out combinations: 0, 1, 2 or a tuple of them.
    fraction
        Share of the *eligible* combinations (all members measured as singles) to target, spread
        evenly over the requested seen counts. Default: all of them (``"gears"``); half of all
        combinations for ``mode="ahlmann-eltze"``.
    held_out
        Chosen labels instead of a random draw: singles listed are held out as unseen genes,
        combinations listed go to test (their seen count must be among ``seen``).
    mode
        ``"gears"`` (above) or ``"ahlmann-eltze"``: all singles and the other combinations train.
    control, separator, seed, val_fraction
        As in :func:`split_unseen_perturbations`.

    Returns
    -------
    Split
        ``kind="combinations"``; ``params["seen_counts"]`` maps each test combination to its
        seen count, ``params["held_out_genes"]`` and ``params["dropped_conditions"]`` list genes
        held out and conditions neither trained on nor tested.
    """
    labels, control, members = _prepare(adata, condition_key, control, separator)
    levels = sorted({int(s) for s in ([seen] if np.isscalar(seen) else seen)})
    if mode not in ("gears", "ahlmann-eltze") or not levels or min(levels) < 0:
        raise ValueError(f"mode must be 'gears' or 'ahlmann-eltze' (got {mode!r}) and seen "
                         f"non-negative counts (got {seen!r}).")
    combos = sorted(c for c, m in members.items() if len(m) > 1)
    if not combos:
        raise ValueError(f"No combinations (labels joined by {separator!r}) in "
                         f"adata.obs[{condition_key!r}]; use split_unseen_perturbations.")
    singles = {m[0] for m in members.values() if len(m) == 1}
    eligible = [c for c in combos if set(members[c]) <= singles]
    rng = np.random.default_rng(seed)
    out: set[str] = set()
    targets: set[str] = set()
    if mode == "ahlmann-eltze":
        levels = list(range(max(len(members[c]) for c in combos) + 1))
        if held_out is not None:
            targets = set(_known(held_out, combos, control, "held_out (combinations only)"))
        else:
            _n_of(0.5 if fraction is None else fraction, 1)
            n = int(np.floor((0.5 if fraction is None else fraction) * len(combos)))
            n = max(1, min(len(combos) - 1, n))
            targets = set(rng.choice(combos, size=n, replace=False).tolist())
    elif held_out is not None:
        chosen = _known(held_out, sorted(members), control)
        out = {members[c][0] for c in chosen if len(members[c]) == 1}
        targets = {c for c in chosen if len(members[c]) > 1}
    else:
        keep: set[str] = set()
        n = _n_of(1.0 if fraction is None else fraction, len(eligible))
        quota = dict.fromkeys(levels, max(1, -(-n // len(levels))))
        done = dict.fromkeys(levels, 0)
        for c in rng.permutation(np.asarray(eligible, dtype=object)).tolist():
            for lv in sorted((lv for lv in levels if done[lv] < quota[lv]),
                             key=lambda lv: (done[lv] / quota[lv], -lv)):
                if _assign(members[c], lv, out, keep, rng):
                    targets.add(c)
                    done[lv] += 1
                    break
    trained = singles - out
    counts = {c: len(set(members[c]) & trained) for c in combos}
    bad = {c: counts[c] for c in targets if counts[c] not in levels}
    if bad:
        raise ValueError(f"Held-out combinations {bad} (label: seen count) are not seen={seen}.")
    touched = {c for c in members if set(members[c]) & out}
    test_combos = sorted(targets | {c for c in touched if c in counts and counts[c] in levels})
    if not test_combos:
        raise ValueError(
            f"No combination qualifies for seen={seen}: {len(eligible)} of {len(combos)} "
            f"combinations have all members measured as single perturbations "
            f"({_preview(eligible, 10) or 'none'}). Try another seen count or "
            "mode='ahlmann-eltze'.")
    empty = [lv for lv in levels if mode == "gears" and lv not in {counts[c] for c in test_combos}]
    if empty:
        warnings.warn(f"No held-out combination has seen count {empty}.", stacklevel=2)
    held_singles = sorted(c for c in touched if len(members[c]) == 1)
    dropped = sorted(touched - set(test_combos) - set(held_singles))
    held = sorted(set(test_combos) | set(held_singles))
    params = {"mode": mode, "seen": levels, "fraction": fraction,
              "seen_counts": {c: counts[c] for c in test_combos},
              "held_out_genes": sorted(out), "dropped_conditions": dropped}
    return _finish(adata, labels, condition_key, np.isin(labels, held), kind="combinations",
                   params=params, held_out=held, context=None, control=control,
                   separator=separator, seed=seed, val_fraction=val_fraction,
                   drop=np.isin(labels, dropped))


def _context_split(adata: AnnData, condition_key: str, key: str, values, conditions, *,
                   kind: str, what: str, control: str | None, separator: str, seed: int,
                   val_fraction: float, params: dict) -> Split:
    labels, control, members = _prepare(adata, condition_key, control, separator)
    vals = [values] if isinstance(values, (str, int, float, np.number)) else list(values)
    col = _obs_column(adata, key)
    missing = [v for v in vals if not _isin(col, [v]).any()]
    if missing or not vals:
        raise ValueError(f"{what} {missing or vals} not found in adata.obs[{key!r}]; available: "
                         f"{_preview(pd.unique(col.astype(str)))}.")
    in_ctx = _isin(col, vals)
    present = sorted(set(labels[in_ctx]) - {control})
    if conditions is None:
        conds = present
    else:
        conds = _known(conditions, sorted(members), control, "conditions")
        absent = [c for c in conds if c not in present]
        if absent:
            raise ValueError(f"conditions {absent} have no cells with {key} in {vals}.")
    test = in_ctx & np.isin(labels, conds)
    context = {key: vals[0] if len(vals) == 1 else vals}
    params = {"context_key": key, "context": vals, **params}
    if kind == "covariate_context":
        params["source_obs_names"] = np.asarray(adata.obs_names)[in_ctx & (labels == control)]
    return _finish(adata, labels, condition_key, test, kind=kind, params=params, held_out=conds,
                   context=context, control=control, separator=separator, seed=seed,
                   val_fraction=val_fraction, strata_key=key)


def split_covariate_context(
    adata: AnnData, condition_key: str, covariate_key: str, *, context: str | Sequence[str],
    conditions: Sequence[str] | None = None, control: str | None = None, separator: str = "+",
    seed: int = 0, val_fraction: float = 0.0,
) -> Split:
    """Hold out perturbed cells of one context (cell type, patient, ...), scGen/Kang style.

    The context's control cells stay in train: they are the source for its counterfactuals and
    are listed in ``params["source_obs_names"]``. Other contexts keep all their cells in train.

    Parameters
    ----------
    adata
        Cells with condition labels in ``adata.obs[condition_key]``.
    condition_key
        ``adata.obs`` column with condition labels.
    covariate_key
        ``adata.obs`` column holding the context (e.g. ``"cell_type"``).
    context
        Value(s) of ``covariate_key`` to hold out (e.g. ``"CD4T"``).
    conditions
        Conditions held out in that context; default all its non-control conditions.
    control, separator, seed, val_fraction
        As in :func:`split_unseen_perturbations` (val is stratified by condition and context).

    Returns
    -------
    Split
        ``kind="covariate_context"``, ``held_out_context={covariate_key: context}``.
    """
    return _context_split(adata, condition_key, covariate_key, context, conditions,
                          kind="covariate_context", what="context", control=control,
                          separator=separator, seed=seed, val_fraction=val_fraction, params={})


def split_dose(
    adata: AnnData, condition_key: str, dose_key: str, *, held_out_doses,
    conditions: Sequence[str] | None = None, control: str | None = None, separator: str = "+",
    seed: int = 0, val_fraction: float = 0.0,
) -> Split:
    """Hold out dose levels (chemical screens): those doses' perturbed cells go to test.

    Parameters
    ----------
    adata
        Cells with condition labels in ``adata.obs[condition_key]``.
    condition_key
        ``adata.obs`` column with condition labels.
    dose_key
        ``adata.obs`` column with doses (numbers match with tolerance, else as strings).
    held_out_doses
        Dose value(s) to hold out.
    conditions
        Conditions whose held-out doses go to test; default all non-control ones at those doses.
    control, separator, seed, val_fraction
        As in :func:`split_unseen_perturbations`; controls stay in train.

    Returns
    -------
    Split
        ``kind="dose"``, ``held_out_context={dose_key: doses}``.
    """
    return _context_split(adata, condition_key, dose_key, held_out_doses, conditions,
                          kind="dose", what="held_out_doses", control=control,
                          separator=separator, seed=seed, val_fraction=val_fraction, params={})


def random_cells(
    adata: AnnData, condition_key: str, *, fraction: float = 0.2, stratify_key: str | None = None,
    include_control: bool = False, control: str | None = None, separator: str = "+",
    seed: int = 0, val_fraction: float = 0.0,
) -> Split:
    """Random cells of every condition to test (seen perturbations), stratified by condition.

    Parameters
    ----------
    adata
        Cells with condition labels in ``adata.obs[condition_key]``.
    condition_key
        ``adata.obs`` column with condition labels.
    fraction
        Share of each condition's cells sent to test (a condition keeps at least one train cell).
    stratify_key
        Optional extra ``adata.obs`` column to stratify by (e.g. ``"cell_type"``).
    include_control
        Also send a share of control cells to test (default: all controls train).
    control, separator, seed, val_fraction
        As in :func:`split_unseen_perturbations`.

    Returns
    -------
    Split
        ``kind="random_cells"`` with no held-out conditions.
    """
    labels, control, _ = _prepare(adata, condition_key, control, separator)
    _n_of(fraction, 1)
    strata = labels.astype(object)
    if stratify_key is not None:
        strata = strata + "\x1f" + _obs_column(adata, stratify_key).astype(str).to_numpy()
    pool = np.flatnonzero(np.ones_like(labels, bool) if include_control else labels != control)
    test = np.zeros(adata.n_obs, dtype=bool)
    test[_stratified(pool, strata, fraction, np.random.default_rng(seed))] = True
    return _finish(adata, labels, condition_key, test, kind="random_cells",
                   params={"fraction": fraction, "stratify_key": stratify_key,
                           "include_control": include_control}, held_out=[], context=None,
                   control=control, separator=separator, seed=seed, val_fraction=val_fraction,
                   strata_key=stratify_key)


split_random_cells = random_cells
