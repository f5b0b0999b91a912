"""What real cells score on the seen settings of the quality suite, and what the ``seen_mean``
baseline's cells gain from being the evaluation's own control cells (session 24, issue #17).

Methods scored (beside ``seen_mean``; Pearson Δ / top-20-DE Pearson Δ / energy distance):

* ``train_cells``: real training cells of each condition (the suite's reference row);
* ``source_shift_clipped`` / ``source_shift_matched``: the suite's source cells (the
  evaluation's control cells) + the condition's training effect in log1p, clipped at 0 /
  shifted per gene so that the clipped mean is the target (valid, non-negative cells);
* ``other_shift_matched``: the same from as many *other* training control cells (independent
  of the evaluation's control cells, as generated cells are), in contexts that have them.

Usage, from the repository root:
  python benchmarks/archive/seen_reference_cells.py papalexi_seen [glioblastoma_seen ...]
Exploratory code (not a maintained suite).
"""
import sys, argparse
sys.path.insert(0, "benchmarks")
import anndata as ad, numpy as np, pandas as pd, torch
import scdit
from scdit.data import to_log1p, clipped_mean_shift
from suites.quality import settings, _train_cells
torch.set_num_threads(1)


def dense(X):
    X = to_log1p(X)
    return np.asarray(X.todense()) if hasattr(X, "todense") else np.asarray(X)


for name in sys.argv[1:]:
    st = settings()[name]
    task = st.make(st.holdouts[0], False, argparse.Namespace())
    key, cov, tr = st.condition_key, st.covariate_key, task.train
    parts = task.parts or ((task.source, task.n_cells),)
    rng = np.random.default_rng(1)
    made = {m: [] for m in ("source_shift_clipped", "source_shift_matched", "other_shift_matched")}
    for src, n in parts:
        ctx = (np.ones(tr.n_obs, bool) if cov is None
               else (tr.obs[cov] == src.obs[cov].iloc[0]).to_numpy())
        ctrl = ctx & (tr.obs[key] == st.control).to_numpy()
        C = dense(tr[ctrl].X).mean(0)
        rest = np.flatnonzero(ctrl & ~tr.obs_names.isin(src.obs_names))
        other = tr[np.sort(rng.choice(rest, min(src.n_obs, len(rest)), replace=False))]
        bases = [(src, ("source_shift_clipped", "source_shift_matched"))]
        if len(rest):  # (none where every training control cell of the context is a source)
            bases.append((other, ("other_shift_matched",)))
        for base, kinds in bases:
            B = dense(base.X)
            for c in sorted(n):
                target = B.mean(0) + dense(tr[ctx & (tr.obs[key] == c).to_numpy()].X).mean(0) - C
                for kind in kinds:
                    X = (np.clip(B + target - B.mean(0), 0, None) if kind.endswith("clipped")
                         else np.maximum(B + clipped_mean_shift(B, target), 0))
                    obs = pd.DataFrame({key: c}, index=[f"{kind}{c}{i}" for i in range(len(B))])
                    if cov:
                        obs[cov] = src.obs[cov].iloc[0]
                    made[kind].append(ad.AnnData(X.astype(np.float32), obs=obs, var=tr.var[[]].copy()))
    cells = {m: ad.concat(v) for m, v in made.items() if v}
    cells["train_cells"] = _train_cells(task, st, 0)
    rows = []
    for i, (m, a) in enumerate(cells.items()):
        df = scdit.evaluate(a, task.real, key, baselines=("seen_mean",) if i == 0 else (),
                            method_name=m, control=st.control, train=tr, covariate_key=cov, seed=0)
        rows.append(scdit.evaluate.summarize(df))
    t = pd.concat(rows)
    print(name, "\n", t[["pearson_delta", "pearson_delta_de", "energy_distance"]].round(4),
          flush=True)
