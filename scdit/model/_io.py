"""Model files: ``config.json`` + ``model.safetensors`` + ``reference.h5ad`` (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..conditions import ConditionEncoder
from ..config import ScDiTConfig
from ..data import ConditionVocab, CovariateVocab
from ..models import DiT, VelocityField
from ..tokenizers import Tokenizer, tokenizer_from_state

FORMAT_VERSION = 1


def build_field(cfg: ScDiTConfig, tokenizer: Tokenizer, vocab: ConditionVocab,
                covariates: CovariateVocab, features: np.ndarray | None = None) -> VelocityField:
    """Fresh velocity field sized for the tokenizer and vocabularies.

    ``features`` is the perturbation feature table (seen atoms, then featured ones); when the
    configuration has features but none are given (loading), a zero table of the right shape is
    made for ``load_state_dict`` to fill.
    """
    d = cfg.dit
    dit = DiT(tokenizer.n_tokens, tokenizer.patch_size, tokenizer.n_features, d.hidden_size,
              d.depth, d.num_heads, d.mlp_ratio)
    gene_init = tokenizer.gene_embedding_init  # user gene features (fit only)
    if gene_init is not None:
        dit.embed.init_identity(gene_init)
    c = cfg.conditions
    if features is None and c.features != "none":
        features = np.zeros((len(vocab.atoms) + len(vocab.featured), c.n_features), np.float32)
    encoder = ConditionEncoder(len(vocab.atoms), covariates.sizes(), d.hidden_size,
                               features=features, residual_dropout=c.residual_dropout,
                               use_dose=cfg.data.dose_key is not None)
    return VelocityField(dit, encoder)


def write_model(path: str | Path, model, overwrite: bool = False) -> Path:
    """Write ``model`` into the folder ``path`` (see :meth:`scdit.ScDiT.save`)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True.")
    path.mkdir(parents=True, exist_ok=True)
    tok_meta, tok_arrays = model.tokenizer.state()
    meta = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "vocab": model.vocab.to_dict(), "covariates": model.covariates.to_dict(),
            "tokenizer": tok_meta, "var_names": list(map(str, model.var_names)),
            "summary": model.summary}
    (path / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    tensors = {f"field.{k}": v.detach().cpu().contiguous()
               for k, v in model.field.state_dict().items()}
    tensors.update({f"tokenizer.{k}": torch.as_tensor(v) for k, v in tok_arrays.items()})
    save_file(tensors, str(path / "model.safetensors"))
    model.reference.write_h5ad(path / "reference.h5ad", compression="gzip")
    return path


def read_model(path: str | Path) -> dict:
    """The parts of a model written by :func:`write_model`, as keyword arguments of
    :class:`scdit.ScDiT`."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"No scdit model in {path} (config.json missing).")
    meta = json.loads((path / "config.json").read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"Model format {meta['format_version']} is newer than this scdit.")
    cfg = ScDiTConfig.from_dict(meta["config"])
    tensors = load_file(str(path / "model.safetensors"))
    tok = tokenizer_from_state(meta["tokenizer"], {k.split(".", 1)[1]: v.numpy() for k, v
                                                   in tensors.items() if k.startswith("tokenizer.")})
    if hasattr(tok, "gene_idx") and len(tok.gene_idx) != len(tok.genes):  # older models
        tok.gene_idx = pd.Index(meta["var_names"]).get_indexer(list(tok.genes)).astype(np.int64)
    vocab = ConditionVocab.from_dict(meta["vocab"])
    covs = CovariateVocab.from_dict(meta["covariates"])
    field = build_field(cfg, tok, vocab, covs)
    field.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items()
                           if k.startswith("field.")})
    reference = ad.read_h5ad(path / "reference.h5ad")
    return {"config": cfg, "vocab": vocab, "covariates": covs, "tokenizer": tok, "field": field,
            "var_names": meta["var_names"], "reference": reference,
            "summary": meta.get("summary")}
