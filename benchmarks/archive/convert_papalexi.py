"""Convert the Papalexi 2021 THP-1 CRISPR-KO example screen of ``sceptredata`` to h5ad.

Source: ``data/lowmoi_example_data.rda`` of https://github.com/Katsevich-Lab/sceptredata
(MIT licence; Papalexi et al. 2021, Nat. Genet., 20,729 THP-1 cells, 26 targeted genes with
3-4 gRNAs each and 9 non-targeting gRNAs; 299 measured genes, raw UMI counts). Each cell is
assigned the target of its most-expressed gRNA (low MOI: about one gRNA per cell);
non-targeting gRNAs become ``control``. Nine targets are among the measured genes, which makes
it a real screen for unseen single perturbations with data-derived features
(``benchmarks/generalise.py --setting screen``).

Needs the ``rdata`` package (``pip install rdata``; a benchmark-only dependency)::

    python benchmarks/convert_papalexi.py lowmoi_example_data.rda papalexi.h5ad
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def _sparse(m) -> sp.csr_matrix:
    """An R ``dgTMatrix`` (``rdata`` returns its slots ``i``, ``j``, ``x``, ``Dim``: 0-based
    triplets) as CSR ``(rows, cols)``."""
    shape = tuple(int(v) for v in np.asarray(m.Dim).ravel())
    return sp.csr_matrix((np.asarray(m.x, dtype=np.float32),
                          (np.asarray(m.i, dtype=np.int64), np.asarray(m.j, dtype=np.int64))),
                         shape=shape)


def _names(m, axis: int) -> list[str]:
    """Row (``axis=0``) or column names of an R matrix's ``Dimnames`` slot (``cell_<i>`` when
    the matrix has none)."""
    names = m.Dimnames[axis]
    if names is None:
        return [f"cell_{i}" for i in range(int(np.asarray(m.Dim).ravel()[axis]))]
    return [str(v) for v in np.asarray(names).ravel()]


def convert(src: str, out: str) -> ad.AnnData:
    """Read ``src`` (the .rda) and write ``out`` (h5ad); returns the AnnData."""
    import rdata

    data = rdata.read_rda(src)["lowmoi_example_data"]
    resp, grna = data["response_matrix"], data["grna_matrix"]
    targets = data["grna_target_data_frame"]
    X = _sparse(resp).T.tocsr().astype(np.float32)  # cells × genes
    G = _sparse(grna).T.tocsr()  # cells × gRNAs
    genes, cells = _names(resp, 0), _names(resp, 1)
    grnas = _names(grna, 0)
    tmap = dict(zip(targets["grna_id"].astype(str), targets["grna_target"].astype(str),
                    strict=True))
    top = np.asarray(G.argmax(axis=1)).ravel()
    n_umi = np.asarray(G.max(axis=1).todense()).ravel()
    label = np.array([tmap[grnas[i]] for i in top], dtype=object)
    label[np.isin(label, ["non-targeting", "non_targeting", "NT"])] = "control"
    obs = pd.DataFrame({"perturbation": pd.Categorical(label), "grna": [grnas[i] for i in top],
                        "grna_umi": n_umi}, index=cells)
    extra = data.get("extra_covariates")
    if extra is not None:
        for col in extra.columns:
            obs[col] = pd.Categorical(np.asarray(extra[col]).astype(str))
    keep = n_umi > 0
    adata = ad.AnnData(X[keep], obs=obs[keep], var=pd.DataFrame(index=genes))
    adata.uns["source"] = ("sceptredata lowmoi_example_data (MIT), Papalexi et al. 2021; "
                           "top gRNA per cell, non-targeting -> control")
    adata.write_h5ad(out, compression="gzip")
    return adata


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("out")
    a = p.parse_args()
    adata = convert(a.src, a.out)
    measured = sorted(set(adata.obs["perturbation"]) & set(adata.var_names))
    print(f"{adata.n_obs} cells x {adata.n_vars} genes; "
          f"{adata.obs['perturbation'].nunique() - 1} targets, measured: {', '.join(measured)}")


if __name__ == "__main__":
    main()
