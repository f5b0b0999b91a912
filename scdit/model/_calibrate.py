"""The guidance scale of seen perturbations, chosen after training from the model's own cells.

A conditional flow fitted with condition dropout can under-express a perturbation's effect:
on the seen glioblastoma patients benchmark the generator's mean change had the direction of
the training cells' change but not its full size, and classifier-free guidance slightly above
1 restored it, while on the Norman K562 seen perturbations any guidance above 1 hurt. So the
scale is not fixed: :func:`calibrate_seen_guidance` generates cells of the model's stored
training groups (``ScDiT.reference``) at a few scales, without any effect estimate, and keeps
the scale whose cells are closest to the stored cells by energy distance in their principal
components. No held-out or test cell is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from ..config import SamplingConfig
from ..data import to_log1p
from ..evaluate import fit_pca

if TYPE_CHECKING:
    from ._model import ScDiT

#: Guidance scales compared by :func:`calibrate_seen_guidance` (1 = the conditional flow).
GUIDANCE_SCALES = (1.0, 1.25, 1.5)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance ``2 E|x - y| - E|x - x'| - E|y - y'|`` of two sets of rows (V-statistic)."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean()
                 - torch.cdist(y, y).mean())


def calibrate_seen_guidance(model: ScDiT, *, scales: tuple[float, ...] = GUIDANCE_SCALES,
                            max_groups: int = 8, max_cells: int = 100, min_cells: int = 20,
                            n_pcs: int = 30, seed: int = 0) -> dict[str, Any]:
    """Choose the classifier-free guidance scale of the perturbations a model was trained on.

    For up to ``max_groups`` stored (perturbation × covariates) groups of perturbed training
    cells (``model.reference``; drawn with ``seed``), up to ``max_cells`` cells each,
    ``model.sample`` generates as many cells of the group at each scale, from the group's
    context, with ``effects="none"`` (the generator alone), in log1p of the modelled genes.
    The scale with the smallest mean energy distance between generated and stored cells, in
    ``n_pcs`` principal components of the stored cells, is chosen. Every scale is scored on the
    same groups, cell numbers and seeds, so the energy distance's cell-number bias is the same
    for all.

    Parameters
    ----------
    model
        A fitted model whose unconditional branch was trained (``DiTConfig.cond_dropout > 0``),
        without doses (``fit`` does not calibrate dose models: their groups would need a dose
        each; they keep 1).
    scales
        Candidate scales; 1 (no guidance) should be among them.
    max_groups, max_cells, min_cells
        Groups scored, stored cells used per group, and the fewest stored cells for a group to
        be scored.
    n_pcs
        Principal components of the stored cells the distances are measured in.
    seed
        Seed of the choice of groups and cells and of the generation.

    Returns
    -------
    dict
        ``scale`` (the chosen one), ``scales``, ``energy`` (mean energy distance per scale) and
        ``groups`` (how many were scored); ``scale`` is 1 with ``groups`` 0 when no group has
        ``min_cells`` stored cells.
    """
    if not scales or any(not np.isfinite(s) or s < 0 for s in scales):
        raise ValueError(f"scales must be non-negative numbers, got {scales!r}.")
    cfg = model.config.data
    ref = model.reference
    keys = [cfg.condition_key, *cfg.covariate_keys]
    obs = ref.obs[keys].astype(str)
    canon = model.cells.canonical_labels()
    control = model.vocab.control
    by_group = obs.groupby(keys, sort=True, observed=True).indices
    groups = [(key, rows) for key, rows in by_group.items()
              if len(rows) >= min_cells and canon[rows[0]] != control]
    out: dict[str, Any] = {"scale": 1.0, "scales": [float(s) for s in scales], "energy": [],
                           "groups": 0}
    if not groups:
        return out
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(groups), min(max_groups, len(groups)), replace=False))
    real = []
    for g in pick:
        rows = groups[g][1]
        real.append(np.sort(rng.choice(rows, min(max_cells, len(rows)), replace=False)))
    X = to_log1p(ref.X[np.concatenate(real)], cfg.representation)[:, model.gene_index]
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)  # modelled genes
    center, comps = fit_pca(X, min(n_pcs, X.shape[0] - 1, X.shape[1]))
    project = lambda A: torch.as_tensor((A - center) @ comps, dtype=torch.float64)  # noqa: E731
    bounds = np.cumsum([0, *map(len, real)])
    energy = np.zeros((len(scales), len(pick)))
    for j, g in enumerate(pick):
        key = groups[g][0]
        key = key if isinstance(key, tuple) else (key,)
        covs = dict(zip(cfg.covariate_keys, key[1:], strict=True)) or None
        y = project(X[bounds[j]:bounds[j + 1]])
        for i, s in enumerate(scales):
            G = model.sample(key[0], len(real[j]), covariates=covs, effects="none",
                             sampling=SamplingConfig(guidance_scale=float(s), invert=False),
                             seed=seed + j, verbose=False)
            energy[i, j] = energy_distance(project(np.asarray(G, dtype=np.float64)), y)
    mean = energy.mean(1)
    out.update(scale=float(scales[int(np.argmin(mean))]), energy=[float(e) for e in mean],
               groups=int(len(pick)))
    return out
