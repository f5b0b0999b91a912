"""Run CellFlow (``cellflow-tools``) on one held-out-context split, as a peer of scdit.

Runs in CellFlow's own virtualenv (``/work/peers/cellflow-venv``) and does not import scdit.
It reads a job description JSON written by ``score_cellflow.py prepare``::

    {"data": "cells.h5ad",            # log1p-normalised cells (train + test), X dense or sparse
     "split": "split.json",           # scdit.Split.to_json output (train/test obs_names, params)
     "condition_key": "condition", "context_key": "patient_id", "control": "ctrl",
     "context": "PW030", "out": "pred.h5ad",
     "num_iterations": 1000, "batch_size": 1024, "n_comps": 50, "seed": 0,
     "architecture": "tutorial"}      # or "small" (see SMALL below)

and writes the predicted cells, decoded to genes, to ``out`` (an AnnData with the var_names of
``data`` and ``obs[condition_key]``, ``obs[context_key]``) plus ``out + ".json"`` with timings.

Settings follow CellFlow's held-out-context tutorial (docs/notebooks/100_pbmc.ipynb,
"Predicting donor-specific cytokine effects on PBMCs": a cytokine is predicted for donors whose
response was not seen): PCA of the log1p data fitted on the training cells, solver "otfm",
the context (donor) represented by the mean of its control cells in PCA space and used both as
sample covariate and split covariate, deterministic condition encoder with attention-token
pooling, the tutorial's network widths, ``match_linear(epsilon=0.5, tau_a=1, tau_b=1)``,
``constant_noise=0.5``, ``optax.MultiSteps(optax.adam(5e-5), 20)`` and batch size 1024; the
prediction is decoded with ``reconstruct_pca``. The tutorial trains for 100,000 iterations on a
GPU; ``num_iterations`` is whatever the job asks for. The tutorial embeds perturbations with ESM2;
here they are one-hot encoded (``cellflow.preprocessing.encode_onehot``), as no protein language
model can be downloaded on this machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import anndata as ad
import flax.linen as nn
import jax
import numpy as np
import optax
import pandas as pd
import scipy.sparse as sp
from cellflow.model import CellFlow
from cellflow.preprocessing import centered_pca, encode_onehot, project_pca, reconstruct_pca
from cellflow.utils import match_linear

#: A reduced network for CPU-only runs (a deviation from the tutorial, reported as such).
SMALL = {
    "condition_embedding_dim": 64,
    "before_pool_pert": [128, 128],
    "before_pool_ctx": [64, 64],
    "after_pool": [128, 128],
    "time_freqs": 64,
    "time_encoder_dims": [128, 128],
    "hidden_dims": [256, 256],
    "decoder_dims": [512, 512],
    "multisteps": 1,
    "lr": 1e-4,
}
TUTORIAL = {
    "condition_embedding_dim": 256,
    "before_pool_pert": [1024, 1024],
    "before_pool_ctx": [256, 256],
    "after_pool": [1024, 1024],
    "time_freqs": 1024,
    "time_encoder_dims": [1024, 1024, 1024],
    "hidden_dims": [2048, 2048, 2048],
    "decoder_dims": [4096, 4096, 4096],
    "multisteps": 20,
    "lr": 5e-5,
}


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def run(job: dict) -> dict:
    t0 = time.time()
    cond_key, ctx_key = job["condition_key"], job["context_key"]
    control, context = str(job["control"]), str(job["context"])
    arch = {"tutorial": TUTORIAL, "small": SMALL}[job.get("architecture", "tutorial")]
    split = json.loads(Path(job["split"]).read_text())
    adata = ad.read_h5ad(job["data"])
    adata.X = _dense(adata.X)
    for key in (cond_key, ctx_key):
        adata.obs[key] = adata.obs[key].astype(str)
    adata.obs["is_control"] = adata.obs[cond_key] == control

    train = adata[pd.Index(split["train"])].copy()
    source = adata[pd.Index(split["params"]["source_obs_names"])].copy()
    test = adata[pd.Index(split["test"])]
    assert not set(test.obs_names) & set(train.obs_names), "test cells in train"
    assert source.obs["is_control"].all() and (source.obs[ctx_key] == context).all()
    held_out = sorted(test.obs[cond_key].unique())

    # representation: PCA of log1p expression, fitted on the training cells
    centered_pca(train, n_comps=int(job.get("n_comps", 50)), keep_centered_data=False)
    project_pca(query_adata=source, ref_adata=train)

    # context embedding: mean of the context's control cells in PCA space (tutorial's donor rep.)
    # or, with "context_rep": "onehot", a one-hot vector per context (every context in the data)
    ctrl = train[train.obs["is_control"]]
    if job.get("context_rep", "control_mean") == "onehot":
        names = sorted(adata.obs[ctx_key].unique())
        ctx_emb = {c: np.eye(len(names), dtype=np.float32)[i] for i, c in enumerate(names)}
    else:
        ctx_emb = {c: np.asarray(ctrl.obsm["X_pca"][(ctrl.obs[ctx_key] == c).to_numpy()].mean(0))
                   for c in sorted(ctrl.obs[ctx_key].unique())}
    train.uns["context_embeddings"] = ctx_emb
    encode_onehot(train, covariate_keys=cond_key, uns_key_added="pert_onehot",
                  exclude_values=[control])
    # CellFlow needs a target distribution for every control population (split covariate value):
    # the held-out context has none in training, so its control cells are left out of CellFlow's
    # training data (they still shape the PCA and the context embedding, and are the source
    # cells at prediction time).
    fit = train[~(train.obs["is_control"] & (train.obs[ctx_key] == context))].copy()
    fit.uns = train.uns

    cf = CellFlow(fit, solver="otfm")
    cf.prepare_data(
        sample_rep="X_pca",
        control_key="is_control",
        perturbation_covariates={"perturbation": (cond_key,)},
        perturbation_covariate_reps={"perturbation": "pert_onehot"},
        sample_covariates=[ctx_key],
        sample_covariate_reps={ctx_key: "context_embeddings"},
        split_covariates=[ctx_key],
        max_combination_length=1,
        null_value=0.0,
    )
    cf.prepare_model(
        condition_mode="deterministic",
        regularization=0.0,
        pooling="attention_token",
        pooling_kwargs={},
        layers_before_pool={
            "perturbation": {"layer_type": "mlp", "dims": arch["before_pool_pert"],
                             "dropout_rate": 0.5},
            ctx_key: {"layer_type": "mlp", "dims": arch["before_pool_ctx"], "dropout_rate": 0.0},
        },
        layers_after_pool={"layer_type": "mlp", "dims": arch["after_pool"], "dropout_rate": 0.0},
        condition_embedding_dim=arch["condition_embedding_dim"],
        cond_output_dropout=0.9,
        condition_encoder_kwargs={},
        pool_sample_covariates=True,
        time_freqs=arch["time_freqs"],
        time_encoder_dims=arch["time_encoder_dims"],
        time_encoder_dropout=0.0,
        hidden_dims=arch["hidden_dims"],
        hidden_dropout=0.0,
        decoder_dims=arch["decoder_dims"],
        vf_act_fn=nn.silu,
        vf_kwargs=None,
        probability_path={"constant_noise": 0.5},
        match_fn=functools.partial(match_linear, epsilon=0.5, tau_a=1.0, tau_b=1.0),
        optimizer=optax.MultiSteps(optax.adam(arch["lr"]), arch["multisteps"]),
        solver_kwargs={},
        layer_norm_before_concatenation=False,
        linear_projection_before_concatenation=False,
        seed=int(job.get("seed", 0)),
    )
    t_setup = time.time() - t0
    n_iter = int(job["num_iterations"])
    budget = job.get("train_seconds")  # optional wall-time cap on training (GPU leases)
    with _time_capped(budget):
        cf.train(num_iterations=n_iter, batch_size=int(job.get("batch_size", 1024)),
                 valid_freq=n_iter + 10, callbacks=[])
    t_train = time.time() - t0 - t_setup
    losses = np.asarray(cf.trainer.training_logs.get("loss", []), dtype=float)
    capped = bool(budget) and losses.size < n_iter
    n_iter = int(losses.size) if budget else n_iter  # iterations actually run
    print(f"trained {n_iter} iterations in {t_train:.1f}s (setup {t_setup:.1f}s)", flush=True)
    if job.get("train_only"):
        return {"num_iterations": n_iter, "seconds_setup": t_setup, "seconds_train": t_train}

    # predict each held-out condition from the context's control cells, decode to genes
    src = source.copy()
    src.uns = train.uns
    covariates = pd.DataFrame({cond_key: held_out, ctx_key: context, "is_control": False})
    covariates["condition_id"] = covariates[cond_key]
    preds = cf.predict(adata=src, covariate_data=covariates, condition_id_key="condition_id")
    blocks = []
    for cond in held_out:
        z = np.asarray(np.squeeze(preds[cond]), dtype=np.float32).reshape(src.n_obs, -1)
        block = ad.AnnData(X=np.zeros((z.shape[0], train.n_vars), dtype=np.float32),
                           obs=pd.DataFrame({cond_key: cond, ctx_key: context},
                                            index=[f"cellflow_{cond}_{i}" for i in range(len(z))]),
                           var=pd.DataFrame(index=train.var_names.copy()))
        block.obsm["X_pca"] = z
        reconstruct_pca(block, use_rep="X_pca", ref_adata=train)
        block.X = np.asarray(block.layers.pop("X_recon"), dtype=np.float32)
        del block.obsm["X_pca"]
        blocks.append(block)
    pred = ad.concat(blocks)
    pred.var_names = train.var_names.copy()
    pred.uns["cellflow_job"] = json.dumps(job)
    pred.write_h5ad(job["out"])
    t_total = time.time() - t0
    info = {
        "cellflow_version": _version("cellflow-tools"), "jax_version": jax.__version__,
        "ott_version": _version("ott-jax"), "flax_version": _version("flax"),
        "optax_version": _version("optax"), "devices": [str(d) for d in jax.devices()],
        "num_iterations": n_iter, "batch_size": int(job.get("batch_size", 1024)),
        "architecture": job.get("architecture", "tutorial"), "arch": arch,
        "context_rep": job.get("context_rep", "control_mean"),
        "train_seconds_cap": job.get("train_seconds"), "stopped_by_cap": capped,
        "num_iterations_asked": int(job["num_iterations"]),
        "n_comps": int(job.get("n_comps", 50)), "n_train_cells": train.n_obs,
        "n_cellflow_fit_cells": fit.n_obs,
        "n_source_cells": src.n_obs, "held_out_conditions": held_out,
        "seconds_setup": t_setup, "seconds_train": t_train, "seconds_total": t_total,
        "seconds_per_iteration": t_train / max(n_iter, 1),
        "loss_first_100": float(losses[:100].mean()) if losses.size else None,
        "loss_last_100": float(losses[-100:].mean()) if losses.size else None,
        "n_params": int(sum(x.size for x in jax.tree_util.tree_leaves(
            cf.solver.vf_state.params))),
    }
    Path(job["out"] + ".json").write_text(json.dumps(info, indent=2))
    return info


class _Capped:
    """A tqdm bar whose iteration stops at ``deadline``; everything else goes to the bar."""

    def __init__(self, bar, deadline: float):
        self._bar, self._deadline = bar, deadline

    def __iter__(self):
        for i in self._bar:
            if time.time() > self._deadline:
                break
            yield i

    def __getattr__(self, name):
        return getattr(self._bar, name)


@contextlib.contextmanager
def _time_capped(seconds: float | None):
    """Stop CellFlow's training loop once ``seconds`` have passed (JAX's compilation of the
    first step included). CellFlow 0.0.9's trainer iterates a ``tqdm(range(n))`` bar; the bar
    is replaced by one that stops at the deadline."""
    if not seconds:
        yield
        return
    from cellflow.training import _trainer

    if _version("cellflow-tools") != "0.0.9":
        print(f"warning: the time cap was written for cellflow-tools 0.0.9, this is "
              f"{_version('cellflow-tools')}", flush=True)
    original = _trainer.tqdm
    deadline = time.time() + float(seconds)
    _trainer.tqdm = lambda it, *a, **k: _Capped(original(it, *a, **{"mininterval": 10, **k}),
                                                deadline)
    try:
        yield
    finally:
        _trainer.tqdm = original


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":
    info = run(json.loads(Path(sys.argv[1]).read_text()))
    print(json.dumps({k: v for k, v in info.items() if k != "arch"}, indent=1))
