"""Unseen single knock-outs on a real screen (bundled Papalexi 2021 THP-1): issue #4's bar as a
regression check. Slow (a default fit of several minutes); run with ``make test-all``."""

from __future__ import annotations

import anndata as ad
import pytest

import scdit
from scdit.evaluate import summarize
from scdit.splits import split_unseen_perturbations

HELD = ["IFNGR2", "CMTM6", "STAT3"]  # fold 1 of benchmarks/RESULTS.md (2026-11-30)


@pytest.mark.slow
def test_unseen_knockouts_beat_the_mean_baseline_on_a_real_screen():
    adata = scdit.datasets.papalexi21_thp1()
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str)
    split = split_unseen_perturbations(adata, "perturbation", held_out=HELD, control="control",
                                       seed=0)
    train, test = split.subset(adata)
    model = scdit.fit(train, "perturbation", control="control", seed=0, verbose=False,
                      max_steps=1200)
    assert set(HELD) <= set(model.vocab.featured)  # data-derived features of measured targets
    controls = train[train.obs["perturbation"] == "control"].copy()
    pred = ad.concat([model.predict(p, n_cells=300, source=controls, seed=i)
                      for i, p in enumerate(HELD)])
    pred.obs_names_make_unique()
    real = ad.concat([test, controls])
    real.obs_names_make_unique()
    s = summarize(scdit.evaluate(pred, real, "perturbation", control="control", train=train,
                                 baselines=("mean",), seed=0))
    # 2026-11-30, 14-minute fits: top-20 DE 0.722 vs 0.375, discrimination 0.833 vs 0.500
    assert s.loc["scdit", "pearson_delta_de"] > s.loc["mean", "pearson_delta_de"] + 0.1
    assert s.loc["scdit", "discrimination_l1"] > s.loc["mean", "discrimination_l1"]
