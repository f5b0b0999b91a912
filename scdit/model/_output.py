"""Generated tokens → AnnData cells in the training genes and representation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data import log1p_to_counts, to_log1p
from ._cells import LIBRARY_KEY, CellStore
from ._seeds import PRIOR, LabelSeeds


def assemble(cells: CellStore, tokenizer, label: str, tokens: np.ndarray, ref: ad.AnnData, rng,
             representation: str) -> ad.AnnData:
    """Decode generated ``tokens`` ``(n, T, P)`` into copies of the reference cells ``ref``.

    Counts come from the tokenizer's ``decode_counts`` (scVI: sampled from its likelihood with
    the reference cell's library size of the modelled genes) when it has one, else from the
    decoded log1p with the reference cell's library size. ``representation="log1p"`` for a
    counts model returns the decoded log1p instead (unmodelled genes: the reference cells'
    own, normalised).
    """
    X = ref.X.toarray() if sp.issparse(ref.X) else np.array(ref.X, dtype=np.float32)
    X = X.astype(np.float32)
    idx = cells.modelled
    trained = cells.config.data.representation
    z = torch.as_tensor(np.asarray(tokens, dtype=np.float32))  # (n, T, P)
    if trained == "counts" and representation == "log1p":
        X = np.asarray(to_log1p(X, "counts"), dtype=np.float32)
        X[:, idx] = tokenizer.decode(z, obs=ref.obs).numpy()
    elif trained == "counts" and tokenizer.can_decode_counts:
        lib = X[:, idx].sum(1)  # (n,) reference library of the modelled genes
        X[:, idx] = tokenizer.decode_counts(z, lib, obs=ref.obs, generator=rng).numpy()
    elif trained == "counts":
        lib = ref.obs[LIBRARY_KEY].to_numpy()
        X[:, idx] = log1p_to_counts(tokenizer.decode(z, obs=ref.obs).numpy(), lib, rng=rng)
    else:
        X[:, idx] = tokenizer.decode(z, obs=ref.obs).numpy()
    key = cells.config.data.condition_key
    obs = pd.DataFrame({key: label}, index=[f"{label}-{i}" for i in range(len(X))])
    for k in cells.covariates.keys:
        obs[k] = ref.obs[k].astype(str).to_numpy()
    obs["reference_cell"] = ref.obs["reference_cell"].to_numpy()
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=cells.var_names))


def apply_target_prior(cells: CellStore, summary: dict, label: str, part: ad.AnnData,
                       seeds: LabelSeeds, representation: str) -> ad.AnnData:
    """Scale the target genes of unseen (feature-only) members by the training prior
    (``summary["target_prior"]``: the typical ratio of a targeted gene's mean to control);
    counts are resampled with one random stream per gene (``seeds``)."""
    prior = summary.get("target_prior") or {}
    if not prior or prior.get("n", 0) < 2:
        return part
    if np.sign(prior.get("q25", 0.0)) != np.sign(prior.get("q75", 0.0)):
        return part  # targets go both ways in training (mixed CRISPRa/i): no single prior
    vocab = cells.vocab
    targets = [m for m in vocab.members(label)
               if m in set(vocab.featured) and m in cells.var_names]
    if not targets:
        return part
    ratio = float(np.exp(prior["log_ratio"]))
    sparse = sp.issparse(part.X)
    X = part.X.toarray() if sparse else np.array(part.X)
    for g in targets:
        j = int(cells.var_names.get_loc(g))
        col = X[:, j]
        rng = seeds.rng(PRIOR, j)
        if representation == "counts":
            if ratio <= 1:
                new = rng.binomial(np.round(col).astype(np.int64), ratio)
            else:
                new = np.round(col) + rng.poisson(np.round(col) * (ratio - 1))
        else:
            new = np.log1p(np.expm1(col) * ratio)
        X[:, j] = new
    part.X = sp.csr_matrix(X) if sparse else X
    return part
