"""Target marks: the network is told which gene a genetic perturbation targets.

The learning check: on data where every knock-out removes its own target's expression and
nothing else, a tiny fit with marks predicts the knock-out of a gene it never saw perturbed
(the generator alone, no effect estimate on top) with that gene's expression down; the same
fit without marks cannot, so the check can fail.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scdit
from tests.helpers import dense

SEEN = ["G3", "G7", "G11", "G15", "G19", "G27"]
UNSEEN = "G23"
LEARN_STEPS = 300


def knockout_screen(seed: int = 0, n_genes: int = 40, n_ctrl: int = 300, n_per: int = 120
                    ) -> ad.AnnData:
    """Counts of control cells and knock-outs of SEEN + [UNSEEN]; a knock-out keeps 5 % of its
    target's expression and changes nothing else."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(n_genes)]
    base = np.exp(rng.normal(2.0, 0.4, n_genes))  # every gene well expressed
    labels = ["ctrl"] * n_ctrl + [g for g in SEEN + [UNSEEN] for _ in range(n_per)]
    mu = np.tile(base, (len(labels), 1))
    for i, lab in enumerate(labels):
        if lab != "ctrl":
            mu[i, genes.index(lab)] *= 0.05
    X = rng.poisson(mu * rng.lognormal(0, 0.2, (len(labels), 1))).astype(np.float32)
    obs = pd.DataFrame({"condition": pd.Categorical(labels)},
                       index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))


@pytest.fixture(scope="module")
def screen() -> ad.AnnData:
    return knockout_screen()


def _target_ratio(model, adata, gene: str) -> float:
    """Mean generated log1p of ``gene`` under its knock-out over its control mean (real)."""
    j = adata.var_names.get_loc(gene)
    ctrl = scdit.data.counts_to_log1p(adata.X[(adata.obs.condition == "ctrl").to_numpy()])
    pred = model.predict(gene, n_cells=300, seed=0, effects="none", representation="log1p")
    return float(dense(pred.X)[:, j].mean() / dense(ctrl)[:, j].mean())


def test_marks_carry_the_knockout_to_an_unseen_target(screen, tiny):
    train = screen[screen.obs.condition != UNSEEN].copy()
    marked = scdit.fit(train, "condition", max_steps=LEARN_STEPS, seed=0, **tiny)
    plain = scdit.fit(train, "condition", max_steps=LEARN_STEPS, seed=0,
                      conditions={"target_marks": False}, **tiny)
    assert marked.config.conditions.target_marks is True
    assert marked.summary["target_marks"] == len(SEEN)
    assert plain.config.conditions.target_marks is False
    assert UNSEEN in marked.vocab.featured
    unseen_marked = _target_ratio(marked, screen, UNSEEN)
    unseen_plain = _target_ratio(plain, screen, UNSEEN)
    assert unseen_marked < 0.4, unseen_marked  # the knock-out learned from the seen targets
    assert unseen_plain > 0.7, unseen_plain  # without marks the target is not known
    # the marks move the target only: an untargeted gene keeps its control level
    j = screen.var_names.get_loc("G0")
    ctrl = scdit.data.counts_to_log1p(screen.X[(screen.obs.condition == "ctrl").to_numpy()])
    pred = marked.predict(UNSEEN, n_cells=300, seed=0, effects="none", representation="log1p")
    assert 0.9 < dense(pred.X)[:, j].mean() / dense(ctrl)[:, j].mean() < 1.1


def test_marks_resolve_from_the_tokenizer_and_old_files_read_off(screen, tiny, tmp_path):
    train = screen[screen.obs.condition != UNSEEN].copy()
    with pytest.raises(ValueError, match=r"target_marks=True needs the 'genes' tokenizer"):
        scdit.fit(train, "condition", tokenizer="pca", conditions={"target_marks": True}, **tiny)
    pca = scdit.fit(train, "condition", tokenizer="pca", max_steps=2, **tiny)
    assert pca.config.conditions.target_marks is False and pca.summary["target_marks"] == 0
    pca.save(tmp_path / "pca")  # a hand-edited file asking for marks on PCA tokens is refused
    meta = json.loads((tmp_path / "pca" / "config.json").read_text())
    meta["config"]["conditions"]["target_marks"] = True
    (tmp_path / "pca" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"target_marks = true, which needs the gene tokenizer"):
        scdit.load(tmp_path / "pca")
    drugs = train.copy()
    drugs.obs["condition"] = drugs.obs["condition"].astype(str).replace(
        {g: f"drug{g}" for g in SEEN}).astype("category")
    with pytest.warns(UserWarning, match="nothing to mark"):
        m = scdit.fit(drugs, "condition", conditions={"target_marks": True}, max_steps=2,
                      perturbation_features=False, **tiny)
    assert m.config.conditions.target_marks is False
    model = scdit.fit(train, "condition", max_steps=5, seed=0, **tiny)
    model.save(tmp_path / "m")
    a = model.predict(UNSEEN, n_cells=20, seed=3).X.toarray()
    b = scdit.load(tmp_path / "m").predict(UNSEEN, n_cells=20, seed=3).X.toarray()
    assert np.array_equal(a, b)
    # a model file written before the option existed has no mark weights and reads it as off
    cfg_path = tmp_path / "old" / "config.json"
    plain = scdit.fit(train, "condition", max_steps=2, seed=0,
                      conditions={"target_marks": False}, **tiny)
    plain.save(tmp_path / "old")
    meta = json.loads(cfg_path.read_text())
    del meta["config"]["conditions"]["target_marks"]
    cfg_path.write_text(json.dumps(meta))
    assert scdit.load(tmp_path / "old").config.conditions.target_marks is False
