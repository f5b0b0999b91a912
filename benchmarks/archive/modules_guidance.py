"""Unseen targets on the simulated CRISPRi screen with gene programmes (``generalise.py``'s
``modules``: features predict effects there), session 18, issue 17: the automatic guidance
(the feature reliability) against the plain conditional model, from the training control
cells, one predicted cell per control cell.

Usage, from the repository root: python benchmarks/archive/modules_guidance.py [MAX_STEPS]
"""
import os
import sys
import time

sys.path.insert(0, "benchmarks/archive")
import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
from generalise import module_screen  # noqa: E402

import scdit  # noqa: E402
from scdit.splits import split_unseen_perturbations  # noqa: E402

steps = int(sys.argv[1]) if len(sys.argv) > 1 else None
a = module_screen()
split = split_unseen_perturbations(a, "condition", fraction=0.25, control="control", seed=0)
train = a[a.obs_names.isin(split.train)].copy()
test = a[a.obs_names.isin(split.test)].copy()
t0 = time.time()
kw = {} if steps is None else {"max_steps": steps}
model = scdit.fit(train, "condition", control="control", seed=0, verbose=False, **kw)
print("fit", round(time.time() - t0), "s; reliability", model.summary["feature_reliability"],
      flush=True)
ctrl = train[train.obs["condition"] == "control"].copy()
held = sorted(set(test.obs["condition"]))
real = ad.concat([test, ctrl], merge="same")
real.obs_names_make_unique()
variants = {"default": {}, "generator": {"effects": "none"},
            "g0_inverted": {"sampling": scdit.SamplingConfig(guidance_scale=0.0)},
            "g1_inverted": {"sampling": scdit.SamplingConfig(guidance_scale=1.0)},
            "g1_noise": {"sampling": scdit.SamplingConfig(guidance_scale=1.0, invert=False)}}
frames = []
for name, kwv in variants.items():
    cells = [model.predict(c, source=ctrl, seed=i, verbose=False, **kwv)
             for i, c in enumerate(held)]
    pred = ad.concat(cells, merge="same")
    pred.obs_names_make_unique()
    df = scdit.evaluate(pred, real, "condition", control="control", train=train, seed=0,
                        baselines=() if frames else ("no_change", "mean", "linear"),
                        method_name=name)
    frames.append(df if not frames else df[df["method"] == name])
full = pd.concat(frames, ignore_index=True)
full.to_csv(os.path.join(os.environ.get("OUT", "."), "modules_guidance.csv"), index=False)
cols = ["pearson_delta", "pearson_delta_de", "energy_distance", "discrimination_l1"]
print(scdit.evaluate.summarize(full)[cols].round(3).to_string())
