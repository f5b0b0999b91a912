"""UMAP of real and generated cells: PCA fitted on real cells, neighbours + UMAP on both."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..data import get_matrix, to_log1p
from ..evaluate import align_genes
from ._utils import PRED_COLOR, REAL_COLOR, category_colors, condition_mask, finish, panel_axes

SOURCE = "source"


def _rows(n: int, m: int | None, rng: np.random.Generator) -> np.ndarray:
    if m is None or n <= m:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(m), replace=False))


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def compute_embedding(
    real: AnnData,
    pred: AnnData,
    condition_key: str,
    *,
    conditions: Sequence[str] | None = None,
    layer: str | None = None,
    n_top_genes: int | None = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    max_cells: int | None = 5000,
    seed: int = 0,
) -> AnnData:
    """Joint UMAP of real and generated cells (see :func:`embedding`); inputs are not modified.

    Returns an AnnData without ``X`` holding ``obs["source"]`` (``real``/``generated``), the
    columns shared by both inputs, ``obsm["X_pca"]`` and ``obsm["X_umap"]``.
    """
    import scanpy as sc

    for name, a in (("real", real), ("pred", pred)):
        if condition_key not in a.obs:
            raise KeyError(f"`{name}.obs` has no column {condition_key!r}.")
    pred = align_genes(pred, real.var_names, "pred")
    rng = np.random.default_rng(seed)
    parts = []
    for name, a, X in (("real", real, get_matrix(real, layer)), ("generated", pred, pred.X)):
        keep = np.ones(a.n_obs, bool)
        if conditions is not None:
            keep = condition_mask(a.obs[condition_key].astype(str).to_numpy(), conditions)
        idx = np.flatnonzero(keep)
        idx = idx[_rows(len(idx), max_cells, rng)]
        if len(idx) == 0:
            raise ValueError(f"No {name} cells to embed (conditions={conditions!r}).")
        parts.append((name, a, idx, to_log1p(X[idx])))
    (_, ra, ri, Xr), (_, pa, pi, Xp) = parts
    # genes: the real cells' highly variable genes when there are many
    genes = np.arange(real.n_vars)
    if n_top_genes is not None and real.n_vars > n_top_genes:
        hvg = sc.pp.highly_variable_genes(AnnData(X=sp.csr_matrix(Xr, dtype=np.float32)),
                                          n_top_genes=int(n_top_genes), flavor="seurat",
                                          inplace=False)
        genes = np.flatnonzero(hvg["highly_variable"].to_numpy())
    Xr, Xp = _dense(Xr[:, genes]), _dense(Xp[:, genes])
    k = int(min(n_pcs, Xr.shape[0] - 1, Xr.shape[1] - 1))
    if k < 2:
        raise ValueError(f"Too few real cells ({Xr.shape[0]}) or genes ({Xr.shape[1]}) for a PCA.")
    fit = AnnData(X=Xr.copy())
    sc.pp.pca(fit, n_comps=k, random_state=seed)
    comps = np.asarray(fit.varm["PCs"], dtype=np.float64)  # (genes, k)
    center = Xr.astype(np.float64).mean(0)
    Z = np.vstack([(Xr - center) @ comps, (Xp - center) @ comps]).astype(np.float32)
    shared = [c for c in ra.obs.columns if c in pa.obs.columns and c != SOURCE]
    obs = pd.concat([ra.obs.iloc[ri][shared].astype(str), pa.obs.iloc[pi][shared].astype(str)],
                    ignore_index=True)
    obs.insert(0, SOURCE, pd.Categorical(["real"] * len(ri) + ["generated"] * len(pi),
                                         categories=["real", "generated"]))
    obs.index = obs.index.astype(str)
    emb = AnnData(obs=obs, obsm={"X_pca": Z})
    sc.pp.neighbors(emb, n_neighbors=min(int(n_neighbors), emb.n_obs - 1), use_rep="X_pca",
                    random_state=seed)
    sc.tl.umap(emb, random_state=seed)
    emb.uns["scdit_embedding"] = {"n_pcs": k, "n_genes": int(len(genes)), "seed": seed}
    return emb


def embedding(
    real: AnnData,
    pred: AnnData,
    condition_key: str,
    *,
    color: Sequence[str] | str = (SOURCE, "condition"),
    conditions: Sequence[str] | None = None,
    layer: str | None = None,
    n_top_genes: int | None = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    max_cells: int | None = 5000,
    seed: int = 0,
    point_size: float | None = None,
    panel_size: tuple[float, float] = (4.2, 4.0),
    ax=None,
    save=None,
):
    """UMAP of real vs generated cells, coloured by source and by condition.

    Both are converted to log1p (counts with ``normalize_total 1e4``; log1p is left as is), a
    PCA is fitted on the real cells (on their ``n_top_genes`` highly variable genes when they
    have more) and both are projected onto it; the neighbour graph and UMAP are computed on the
    concatenation (scanpy). The inputs are not modified.

    Parameters
    ----------
    real
        Real cells (e.g. the held-out conditions plus control cells).
    pred
        Generated cells; must contain ``real``'s genes. Its ``.X`` is used.
    condition_key
        ``obs`` column with condition labels (in both).
    color
        Panels: ``"source"`` (real / generated), ``"condition"`` (= ``condition_key``), or any
        ``obs`` column present in both.
    conditions
        Only embed cells of these conditions (include the control label to show controls).
    layer
        Layer of ``real`` to use instead of ``.X``.
    n_top_genes, n_pcs, n_neighbors
        Highly variable genes of the real cells used (None: all), PCA components, neighbours.
    max_cells
        At most this many real and this many generated cells (seeded subsample; None: all).
    seed
        Seed of the subsampling, PCA, neighbours and UMAP.
    point_size, panel_size
        Marker size (default from the number of cells) and panel size in inches.
    ax
        Axes to draw into (one per ``color`` entry); default a new figure.
    save
        Path to save the figure to.

    Returns
    -------
    The :class:`matplotlib.figure.Figure`; ``fig.scdit_embedding`` holds the embedded cells
    (AnnData with ``obs["source"]``, ``obsm["X_pca"]`` and ``obsm["X_umap"]``).
    """
    color = [color] if isinstance(color, str) else list(color)
    color = [condition_key if c == "condition" else c for c in color]
    for c in color:
        if c != SOURCE and (c not in real.obs or c not in pred.obs):
            raise KeyError(f"color {c!r} must be 'source', 'condition' or an obs column of both "
                           "real and pred.")
    emb = compute_embedding(real, pred, condition_key, conditions=conditions, layer=layer,
                            n_top_genes=n_top_genes, n_pcs=n_pcs, n_neighbors=n_neighbors,
                            max_cells=max_cells, seed=seed)
    fig, axes = panel_axes(len(color), ax, ncols=len(color), panel_size=panel_size, what="colors")
    xy = emb.obsm["X_umap"]
    order = np.random.default_rng(seed).permutation(emb.n_obs)  # no class drawn on top
    size = point_size or float(np.clip(12000 / emb.n_obs, 2, 30))
    for key, a in zip(color, axes, strict=True):
        values = emb.obs[key].astype(str).to_numpy()
        if key == SOURCE:
            cats, palette = ["real", "generated"], [REAL_COLOR, PRED_COLOR]
        else:
            cats = sorted(pd.unique(values))
            palette = category_colors(len(cats))
        lookup = dict(zip(cats, palette, strict=True))
        a.scatter(xy[order, 0], xy[order, 1], s=size, lw=0, alpha=0.8,
                  c=[lookup[v] for v in values[order]], rasterized=True)
        for cat in cats:  # legend handles
            n = int((values == cat).sum())
            a.scatter([], [], s=20, color=lookup[cat], label=f"{cat} ({n})")
        a.legend(fontsize=6, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5),
                 ncol=1 if len(cats) <= 18 else 2, markerscale=1.0)
        a.set_title("real vs generated" if key == SOURCE else key, fontsize=10)
        a.set_xticks([])
        a.set_yticks([])
        a.set_xlabel("UMAP1", fontsize=8)
        a.set_ylabel("UMAP2", fontsize=8)
    fig.scdit_embedding = emb
    return finish(fig, save)
