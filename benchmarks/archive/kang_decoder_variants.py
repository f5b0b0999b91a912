"""Kang held-out cell types: how the genes outside the model are filled (session 30, 2026-12-04).

``python kang_decoder_variants.py VALID_H5AD CELLTYPE [CELLTYPE ...]`` fits the quality suite's
default model per held-out cell type (seed 0; saved under ``models/``, reused) and scores, beside
the suite's baselines: ``default``; ``gen_carry`` (the generator alone with the unmodelled genes
copied from the source cells, as before this session); ``dec_mean{20,50,100}`` (the generator
alone, each context's unmodelled genes shifted by a ridge decoding of the generated genes' mean
change, top ``k`` components; what ``SamplingConfig(unmodelled_genes="decode")`` does with
``k = 50``); ``dec_cell{20,50,100}`` (the same change decoded cell by cell, from each generated
cell's change from its own source cell); ``default_dec`` (the default's modelled genes with
unmodelled genes decoded from them instead of the context estimate's). Prints one table per
cell type. Public API plus ``benchmarks/suites``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from suites import quality as Q  # noqa: E402
from suites.common import fit_model, predict_cells  # noqa: E402

import scdit  # noqa: E402


def dense(X) -> np.ndarray:
    return np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float64)


def ridge(Zc: np.ndarray, U: np.ndarray, vt: np.ndarray, s0: float, rank: int):
    V = vt[:rank].T
    S = Zc @ V
    B = np.linalg.solve(S.T @ S + 1e-3 * s0 ** 2 * np.eye(rank), S.T @ (U - U.mean(0)))
    return V, B


def main(path: str, holdouts: list[str]) -> None:
    torch.set_num_threads(1)
    setting = Q.settings()["kang"]

    class Opts:
        kang = path

    for h in holdouts:
        task = setting.make(h, False, Opts)
        key, cov = setting.condition_key, setting.covariate_key
        where = Path(f"models/kang_{h}_0")
        if where.exists():
            model = scdit.load(where)
        else:
            model = fit_model(task.train, key, control=setting.control, seed=0, quick=False,
                              covariate_keys=(cov,))
            model.save(where)
        (src, n), = task.parts or ((task.source, task.n_cells),)
        conds = sorted(n)
        gen = predict_cells(model, conds, n, src, seed=0, quick=False, generator_only=True,
                            sampling={"unmodelled_genes": "carry"})
        default = predict_cells(model, conds, n, src, seed=0, quick=False)
        genes = list(task.train.var_names)
        mod = np.array([genes.index(g) for g in model.tokenizer.genes])
        un = np.setdiff1d(np.arange(len(genes)), mod)
        T = dense(task.train.X)  # Kang is log-normalised
        Zc = T[:, mod] - T[:, mod].mean(0)
        _, s, vt = np.linalg.svd(Zc, full_matrices=False)
        G, Src = dense(gen.X), dense(src.X)
        pos = pd.Index(src.obs_names).get_indexer(gen.obs["reference_cell"])
        preds = {"default": default, "gen_carry": gen}
        for rank in (20, 50, 100):
            V, B = ridge(Zc, T[:, un], vt, s[0], rank)
            for name, per_cell in ((f"dec_mean{rank}", False), (f"dec_cell{rank}", True)):
                X = G.copy()
                for c in conds:
                    r = (gen.obs[key] == c).to_numpy()
                    dZ = G[r][:, mod] - Src[pos[r]][:, mod] if per_cell \
                        else G[r][:, mod].mean(0) - Src[:, mod].mean(0)
                    X[np.ix_(r, un)] = np.clip(G[r][:, un] + (dZ @ V) @ B, 0, None)
                out = gen.copy()
                out.X = X.astype(np.float32)
                preds[name] = out
        V, B = ridge(Zc, T[:, un], vt, s[0], 50)
        D = dense(default.X)
        dpos = pd.Index(src.obs_names).get_indexer(default.obs["reference_cell"])
        for c in conds:
            r = (default.obs[key] == c).to_numpy()
            change = ((D[r][:, mod].mean(0) - Src[:, mod].mean(0)) @ V) @ B
            D[np.ix_(r, un)] = np.clip(Src[dpos[r]][:, un] + change, 0, None)
        out = default.copy()
        out.X = D.astype(np.float32)
        preds["default_dec"] = out
        common = dict(control=setting.control, train=task.train, covariate_key=cov, seed=0)
        frames = [scdit.evaluate(x, task.real, key, method_name=m, **common,
                                 baselines=setting.baselines if i == 0 else ())
                  for i, (m, x) in enumerate(preds.items())]
        table = scdit.evaluate.summarize(pd.concat(frames, ignore_index=True))
        print(h, table[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(3)
              .to_string(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
