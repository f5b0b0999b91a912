"""Spread calibration of the generator: how much wider the real cells of the training contexts
are than the cells the model generates for them, per token value, applied around each
generated context's mean."""

from __future__ import annotations

import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .._config_run import SamplingConfig

if TYPE_CHECKING:
    from ._cells import CellStore

#: Most cells generated to calibrate the spread (split over the training groups).
SPREAD_CELLS = 2000
#: Fewest stored cells a training (context, perturbation) group needs to be compared.
SPREAD_MIN_CELLS = 30
#: Range the calibration factors are clipped to.
SPREAD_RANGE = (0.5, 2.0)
#: Standard deviation (token units) below which a token value is left as it is.
SPREAD_FLOOR = 1e-3

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def spread_applies(sampling: SamplingConfig, model: Any) -> bool:
    """Whether ``predict`` calibrates the generated spread: ``SamplingConfig.spread`` is
    ``"calibrated"``, or ``"auto"`` for a model that transports control cells and was fitted with
    held-out contexts (``summary["contexts_lacking_perturbations"] > 0``), where it helped; on
    the bundled seen settings it did not (docs/results.md). Never for a model fitted with doses
    (its groups would mix doses)."""
    if model.config.data.dose_key is not None or sampling.spread == "raw":
        return False
    return sampling.spread == "calibrated" or (
        model.config.flow.source == "control"
        and int(model.summary.get("contexts_lacking_perturbations", 0)) > 0)


def resolve_spread(model: Any, sampling: SamplingConfig, device: str | None = None
                   ) -> tuple[torch.Tensor | None, SamplingConfig]:
    """The calibration factors a prediction uses (``None``: the raw spread) and ``sampling``
    with ``spread`` resolved to ``"calibrated"`` or ``"raw"`` (as ``uns["scdit"]`` records)."""
    kappa = spread_factors(model, sampling, device=device) \
        if spread_applies(sampling, model) else None
    return kappa, replace(sampling, spread="raw" if kappa is None else "calibrated")


def spread_factors(model: Any, sampling: SamplingConfig | None = None, *,
                   device: str | None = None, max_cells: int = SPREAD_CELLS,
                   min_cells: int = SPREAD_MIN_CELLS) -> torch.Tensor | None:
    """Calibration factors ``(T, P)`` of a fitted model's (:class:`~scdit.ScDiT`) generated
    spread, cached per model, sampling settings and device.

    Training groups (a perturbation in a covariate context) qualify with at least
    ``min_cells`` stored cells and as many stored control cells in their context; at most
    ``max_cells // min_cells`` of them are used (a seeded draw). For each, ``n = max(min_cells,
    max_cells // groups)`` of the context's stored control cells (at most) are predicted under
    the perturbation, as source cells, by the generator alone (``effects="none"``, raw spread,
    seed 0, with ``sampling``'s integration settings and on ``device``), so at most
    ``max_cells`` cells are generated in all; the standard deviation of every token value of
    the generated cells is compared with that of ``n`` of the group's stored cells. The factor
    is the geometric mean of ``real / generated`` over the groups where both deviations exceed
    :data:`SPREAD_FLOOR`, clipped to :data:`SPREAD_RANGE` (1 where none does, e.g. padding).
    No effect estimate and no held-out cell enters. ``None`` where no group qualifies.
    """
    inner = replace(sampling or SamplingConfig(), spread="raw", unmodelled_genes="carry",
                    invert=None)
    key = (inner, str(device))
    cached = _CACHE.setdefault(model, {})
    if key in cached:
        return cached[key]
    cells = model.cells
    obs = cells.reference.obs
    labels = cells.canonical_labels()
    ctx = np.array(["\x1f".join(c) for c in cells.reference_contexts()], dtype=object)
    control = labels == cells.vocab.control
    n_ctrl = {c: int((control & (ctx == c)).sum()) for c in np.unique(ctx)}
    groups = [(lab, c) for lab, c in dict.fromkeys(zip(labels[~control], ctx[~control],
                                                       strict=True))
              if min(((labels == lab) & (ctx == c)).sum(), n_ctrl[c]) >= min_cells]
    rng = np.random.default_rng(0)
    if len(groups) > max_cells // min_cells:
        keep = np.sort(rng.choice(len(groups), max_cells // min_cells, replace=False))
        groups = [groups[i] for i in keep]
    kappa = None
    if groups:
        per = max(min_cells, max_cells // len(groups))
        total = torch.zeros(int(np.prod(model.generator.shape)), dtype=torch.float64)
        count = torch.zeros_like(total)
        for lab, c in groups:
            real = np.flatnonzero((labels == lab) & (ctx == c))
            pool = np.flatnonzero(control & (ctx == c))
            src = cells.reference[np.sort(rng.choice(pool, min(per, len(pool)), replace=False))]
            covariates = dict(zip(cells.covariates.keys, c.split("\x1f"), strict=True)) \
                if cells.covariates.keys else None
            gen = model.predict(str(obs[cells.key].iloc[real[0]]), source=src,
                                covariates=covariates, effects="none", sampling=inner, seed=0,
                                device=device, verbose=False)
            picked = np.sort(rng.choice(real, min(per, len(real)), replace=False))
            sd_gen = model.encode(gen).flatten(1).std(0).double().cpu()
            sd_real = model.encode(cells.reference[picked]).flatten(1).std(0).double().cpu()
            ok = (sd_gen > SPREAD_FLOOR) & (sd_real > SPREAD_FLOOR)
            total += torch.where(ok, (sd_real / sd_gen.clamp_min(SPREAD_FLOOR)).log(), 0.0)
            count += ok
        factor = (total / count.clamp_min(1)).exp().clamp(*SPREAD_RANGE)
        kappa = torch.where(count > 0, factor, 1.0).to(torch.float32) \
            .reshape(model.generator.shape)
    cached[key] = kappa
    return kappa


def widen(tokens: torch.Tensor, kappa: torch.Tensor, cells: CellStore,
          cov_df: pd.DataFrame | None, tokenizer: Any = None) -> torch.Tensor:
    """``tokens`` ``(n, T, P)`` with each context's deviations from its mean scaled by
    ``kappa`` ``(T, P)``: the token means are kept, the spread is calibrated. With a
    ``tokenizer`` whose output is clipped (``clips_output``), each context's tokens are then
    shifted so that their decoded mean is that of the uncalibrated tokens
    (``tokenizer.keep_decoded_mean``)."""
    rows_of: dict[tuple, list[int]] = {}
    for i, c in enumerate(cells.context_keys(cov_df, len(tokens))):
        rows_of.setdefault(c, []).append(i)
    out = tokens.clone()
    k = kappa.to(tokens)
    keep = getattr(tokenizer, "keep_decoded_mean", None) \
        if getattr(tokenizer, "clips_output", False) else None  # optional tokenizer ability
    for rows in rows_of.values():
        sub = tokens[rows]
        mean = sub.mean(0, keepdim=True)
        out[rows] = mean + k * (sub - mean)
        if keep is not None:
            out[rows] = keep(sub, out[rows])
    return out
