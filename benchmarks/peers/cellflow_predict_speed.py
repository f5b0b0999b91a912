"""Fit CellFlow briefly on a perturbation split and time its ``predict`` (CellFlow's venv).

Runs in CellFlow's own virtualenv (``/work/peers/cellflow-venv``) and does not import scdit;
the ``fewstep`` suite of ``benchmarks/run.py`` writes the job and reads the result back
(``--cellflow-venv``). The job JSON::

    {"data": "cells.h5ad",          # log1p cells of the split (train + test), obs[condition_key]
     "split": "split.json",         # {"train": [obs_names], "test": [obs_names]}
     "condition_key": "perturbation", "control": "control", "separator": "+",
     "n_cells": {"A+B": 500, ...},  # cells to generate per held-out condition
     "num_iterations": 2000, "batch_size": 1024, "n_comps": 50, "seed": 0,
     "out": "pred.h5ad"}

Model: the reduced "small" network of ``cellflow_context.py`` (CPU-sized; see
``peers/README.md``), solver ``otfm``, PCA of the log1p training cells, perturbations as one-hot
vectors of their member genes (up to two members, ``max_combination_length=2``; the missing
second member of a single is a zero vector), one control population. Prediction transports
training control cells (drawn with replacement up to the largest ``n_cells``) with CellFlow's
default ODE solver (diffrax Tsit5, adaptive steps, rtol = atol = 1e-5). ``predict`` is called
twice with the same request: the first call includes JAX's compilation, the second is the
timed one. Writes the decoded cells (``reconstruct_pca``) to ``out`` and timings to
``out + ".json"``.
"""

from __future__ import annotations

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
from cellflow.preprocessing import centered_pca, project_pca, reconstruct_pca
from cellflow.utils import match_linear

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cellflow_context import SMALL  # noqa: E402


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _members(label: str, control: str, sep: str) -> tuple[str, str]:
    parts = sorted(p for p in str(label).split(sep) if p and p != control)
    return (parts + [control, control])[0], (parts + [control, control])[1]


def run(job: dict) -> dict:
    t0 = time.time()
    key, control, sep = job["condition_key"], str(job["control"]), job.get("separator", "+")
    split = json.loads(Path(job["split"]).read_text())
    adata = ad.read_h5ad(job["data"])
    adata.X = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X,
                         dtype=np.float32)
    adata.obs[key] = adata.obs[key].astype(str)
    adata.obs["is_control"] = adata.obs[key] == control
    pairs = [_members(v, control, sep) for v in adata.obs[key]]
    adata.obs["pert1"] = [a for a, _ in pairs]
    adata.obs["pert2"] = [b for _, b in pairs]
    train = adata[pd.Index(split["train"])].copy()
    n_cells = {str(k): int(v) for k, v in job["n_cells"].items()}
    held_out = sorted(n_cells)

    centered_pca(train, n_comps=int(job.get("n_comps", 50)), keep_centered_data=False)
    genes = sorted(set(train.obs["pert1"]) | set(train.obs["pert2"])
                   | {g for c in held_out for g in _members(c, control, sep)})
    genes = [g for g in genes if g != control]
    onehot = {g: np.eye(len(genes), dtype=np.float32)[i] for i, g in enumerate(genes)}
    onehot[control] = np.zeros(len(genes), dtype=np.float32)  # the missing member of a single
    train.uns["gene_onehot"] = onehot

    arch = SMALL
    seed = int(job.get("seed", 0))
    cf = CellFlow(train, solver="otfm")
    cf.prepare_data(sample_rep="X_pca", control_key="is_control",
                    perturbation_covariates={"genes": ("pert1", "pert2")},
                    perturbation_covariate_reps={"genes": "gene_onehot"},
                    max_combination_length=2, null_value=0.0)
    cf.prepare_model(
        condition_mode="deterministic", regularization=0.0, pooling="attention_token",
        pooling_kwargs={},
        layers_before_pool={"genes": {"layer_type": "mlp", "dims": arch["before_pool_pert"],
                                      "dropout_rate": 0.5}},
        layers_after_pool={"layer_type": "mlp", "dims": arch["after_pool"], "dropout_rate": 0.0},
        condition_embedding_dim=arch["condition_embedding_dim"], cond_output_dropout=0.9,
        condition_encoder_kwargs={}, time_freqs=arch["time_freqs"],
        time_encoder_dims=arch["time_encoder_dims"], time_encoder_dropout=0.0,
        hidden_dims=arch["hidden_dims"], hidden_dropout=0.0, decoder_dims=arch["decoder_dims"],
        vf_act_fn=nn.silu, vf_kwargs=None, probability_path={"constant_noise": 0.5},
        match_fn=functools.partial(match_linear, epsilon=0.5, tau_a=1.0, tau_b=1.0),
        optimizer=optax.adam(arch["lr"]), solver_kwargs={},
        layer_norm_before_concatenation=False, linear_projection_before_concatenation=False,
        seed=seed)
    t_setup = time.time() - t0
    n_iter = int(job["num_iterations"])
    t1 = time.time()
    cf.train(num_iterations=n_iter, batch_size=int(job.get("batch_size", 1024)),
             valid_freq=n_iter + 10, callbacks=[])
    t_train = time.time() - t1

    # source: training control cells, drawn with replacement up to the largest request
    ctrl = train[train.obs["is_control"].to_numpy()]
    n_max = max(n_cells.values())
    rng = np.random.default_rng(seed)
    src = ctrl[rng.choice(ctrl.n_obs, n_max, replace=n_max > ctrl.n_obs)].copy()
    src.obs_names_make_unique()
    src.uns = train.uns
    project_pca(query_adata=src, ref_adata=train)
    cov = pd.DataFrame({"pert1": [_members(c, control, sep)[0] for c in held_out],
                        "pert2": [_members(c, control, sep)[1] for c in held_out],
                        "is_control": False, "condition_id": held_out})
    timings = []
    for _ in range(2):  # the first call compiles
        t1 = time.time()
        preds = cf.predict(adata=src, covariate_data=cov, condition_id_key="condition_id")
        timings.append(time.time() - t1)
    t1 = time.time()
    blocks = []
    for cond in held_out:
        z = np.asarray(np.squeeze(preds[cond]), dtype=np.float32).reshape(src.n_obs, -1)
        z = z[: n_cells[cond]]
        block = ad.AnnData(X=np.zeros((len(z), train.n_vars), dtype=np.float32),
                           obs=pd.DataFrame({key: cond},
                                            index=[f"cellflow_{cond}_{i}" for i in range(len(z))]),
                           var=pd.DataFrame(index=train.var_names.copy()))
        block.obsm["X_pca"] = z
        reconstruct_pca(block, use_rep="X_pca", ref_adata=train)
        block.X = np.asarray(block.layers.pop("X_recon"), dtype=np.float32)
        del block.obsm["X_pca"]
        blocks.append(block)
    pred = ad.concat(blocks)
    pred.var_names = train.var_names.copy()
    t_decode = time.time() - t1
    pred.write_h5ad(job["out"])
    n_total = len(held_out) * n_max
    info = {
        "cellflow_version": _version("cellflow-tools"), "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()], "architecture": "small",
        "num_iterations": n_iter, "batch_size": int(job.get("batch_size", 1024)),
        "n_comps": int(job.get("n_comps", 50)), "n_train_cells": train.n_obs,
        "held_out_conditions": held_out, "cells_predicted": n_total,
        "ode_solver": "diffrax Tsit5, PIDController(rtol=1e-5, atol=1e-5) (CellFlow default)",
        "seconds_setup": t_setup, "seconds_train": t_train,
        "seconds_per_iteration": t_train / max(n_iter, 1),
        "seconds_predict_first": timings[0], "seconds_predict": timings[1],
        "cells_per_s": n_total / timings[1], "seconds_decode": t_decode,
        "seconds_total": time.time() - t0,
        "n_params": int(sum(x.size for x in jax.tree_util.tree_leaves(
            cf.solver.vf_state.params))),
    }
    Path(job["out"] + ".json").write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text())), indent=1))
