"""Reconstruction ceiling of a tokenizer (encode -> decode on held-out cells)."""

from __future__ import annotations

import numpy as np

from scdit.tokenizers import (
    GeneTokenizer,
    PCATokenizer,
    reconstruct,
    reconstruction_ceiling,
)


def test_reconstruction_ceiling(data):
    _, X, names, obs = data
    labels = obs["condition"].to_numpy()
    exact = reconstruction_ceiling(GeneTokenizer(max_tokens=8).fit(X, names), X, names,
                                   labels=labels, control="ctrl")
    assert exact["per_gene_pearson"] > 0.999 and exact["mse"] < 1e-8
    assert exact["pearson_delta"] > 0.999 and exact["n_perturbations"] == 4
    low = reconstruction_ceiling(PCATokenizer(n_components=2).fit(X, names), X, names,
                                 labels=labels, control="ctrl", max_cells=100)
    assert low["n_cells"] == 100 and low["per_gene_pearson"] < exact["per_gene_pearson"]
    assert low["mse"] > exact["mse"]
    no_labels = reconstruction_ceiling(PCATokenizer(n_components=2).fit(X, names), X, names)
    assert np.isnan(no_labels["pearson_delta"])
    assert reconstruct(PCATokenizer(n_components=2).fit(X, names), X).shape == (400, 50)
