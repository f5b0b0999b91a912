import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, anndata as ad, pandas as pd
import scdit
from scdit.model import make_reference, CellStore, EffectTargets
from scdit.splits import random_cells
a = scdit.datasets.papalexi21_thp1(); a.obs["perturbation"] = a.obs["perturbation"].astype(str)
split = random_cells(a, "perturbation", fraction=0.2, control="control", seed=0)
train, test = split.subset(a)
ctrl = train[train.obs["perturbation"] == "control"].copy()
conds = sorted(set(test.obs["perturbation"]) - {"control"})
n = test.obs["perturbation"].value_counts()
real = ad.concat([test, ctrl], merge="same"); real.obs_names_make_unique()
m = scdit.load(f"models/{sys.argv[1]}")
frames = []
def run(name, **kw):
    cells = ad.concat([m.predict(c, int(n[c]), source=ctrl, seed=i, **kw) for i, c in enumerate(conds)])
    frames.append(scdit.evaluate(cells, real, "perturbation", control="control", train=train,
                                 baselines=("seen_mean",) if not frames else (), method_name=name))
run("always_ref300", effects="always")
run("always_ref300_raw", effects=scdit.EffectConfig(mode="always", shrink=False))
ref = make_reference(train, train.X, m.config, max_per_group=10**9)
m.cells = CellStore(ref, m.config, m.vocab, m.covariates, m.var_names, m.gene_index)
m.targets = EffectTargets(m.cells, m.tokenizer, m.encode, m._seen)
run("always_refall", effects="always")
run("always_refall_raw", effects=scdit.EffectConfig(mode="always", shrink=False))
t = scdit.evaluate.summarize(pd.concat(frames))
print(t[["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]].round(3).to_string())
