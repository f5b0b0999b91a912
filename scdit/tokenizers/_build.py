"""Turn ``scdit.fit``'s ``tokenizer=`` / ``tokenizer_kwargs=`` into a tokenizer and its config."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import TokenizerConfig
from ._base import TOKENIZERS, Tokenizer
from ._genes import GeneTokenizer
from ._pca import PCATokenizer
from ._scvi import ScVITokenizer, is_scvi_model

#: ``tokenizer_kwargs`` keys that each built-in tokenizer reads (besides ``n_top_genes`` and
#: ``max_tokens``, shared by all).
TOKENIZER_OPTIONS: dict[str, tuple[str, ...]] = {
    "genes": ("gene_order", "patch_size", "encoding", "gene_features"),
    "pca": ("n_components", "patch_size"),
    "scvi": ("n_latent", "patch_size", "batch_key", "max_epochs", "gene_likelihood", "library"),
}


def resolve_tokenizer(spec: Any, kwargs: dict[str, Any] | None, *, n_top_genes: int,
                      max_tokens: int, accelerator: str = "auto",
                      verbose: bool = False) -> tuple[Tokenizer, TokenizerConfig]:
    """An unfitted tokenizer and its :class:`~scdit._config.TokenizerConfig`.

    Parameters
    ----------
    spec
        A registered name (``"genes"``, ``"pca"``, ``"scvi"``, or one added with
        :func:`~scdit.tokenizers.register`), a trained ``scvi.model.SCVI``, or an unfitted
        tokenizer instance of a registered class.
    kwargs
        Options of the tokenizer (see :data:`TOKENIZER_OPTIONS`); ``gene_features`` is a
        DataFrame used at fit time only.
    """
    opts = dict(kwargs or {})
    if not isinstance(spec, str) and not is_scvi_model(spec):
        return _custom(spec, opts, n_top_genes, max_tokens)
    kind = "scvi" if is_scvi_model(spec) else spec
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {kind!r}; available: {sorted(TOKENIZERS)} (or a "
                         "trained scvi.model.SCVI, or a tokenizer instance).")
    if kind not in TOKENIZER_OPTIONS:  # a registered user class, built with its own kwargs
        return _custom(TOKENIZERS[kind](**opts), {}, n_top_genes, max_tokens)
    allowed = set(TOKENIZER_OPTIONS[kind]) | {"n_top_genes", "max_tokens"}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ValueError(f"Unknown tokenizer_kwargs {unknown} for tokenizer {kind!r}; valid "
                         f"keys: {sorted(allowed)}.")
    gene_features = opts.pop("gene_features", None)
    opts.setdefault("n_top_genes", n_top_genes)
    opts.setdefault("max_tokens", max_tokens)
    cfg = TokenizerConfig(kind=kind, **opts, gene_features=gene_features is not None,
                          pretrained=kind == "scvi" and not isinstance(spec, str))
    if kind == "genes":
        tok = GeneTokenizer(cfg.n_top_genes, cfg.max_tokens, cfg.gene_order, cfg.patch_size,
                            cfg.encoding, gene_features)
    elif kind == "pca":
        tok = PCATokenizer(cfg.n_components, cfg.n_top_genes, cfg.max_tokens, cfg.patch_size)
    else:
        model = None if isinstance(spec, str) else spec
        if model is not None and ({"n_latent", "batch_key", "gene_likelihood"} & set(opts)):
            raise ValueError("n_latent, batch_key and gene_likelihood come from the trained SCVI "
                             "model; do not pass them in tokenizer_kwargs.")
        tok = ScVITokenizer(cfg.n_latent, cfg.n_top_genes, cfg.max_tokens, cfg.patch_size,
                            cfg.batch_key, cfg.max_epochs, gene_likelihood=cfg.gene_likelihood,
                            accelerator=accelerator, model=model, library=cfg.library,
                            verbose=verbose)
        cfg = dataclasses.replace(cfg, n_latent=tok.n_latent, batch_key=tok.batch_key,
                                  gene_likelihood=tok.gene_likelihood)
    return tok, cfg


def _custom(tok, opts, n_top_genes, max_tokens) -> tuple[Tokenizer, TokenizerConfig]:
    if opts:
        raise ValueError("tokenizer_kwargs apply to tokenizers given by name; configure a "
                         "tokenizer instance directly.")
    if not isinstance(tok, Tokenizer):
        raise TypeError(f"tokenizer must be a name {sorted(TOKENIZERS)}, a trained "
                        f"scvi.model.SCVI or a tokenizer object following "
                        f"scdit.tokenizers.Tokenizer; got {type(tok).__name__}.")
    kind = getattr(tok, "kind", None)
    if TOKENIZERS.get(kind) is not type(tok):
        raise ValueError(f"Register the tokenizer class with @scdit.tokenizers.register(name) "
                         f"and set its kind to that name (got kind={kind!r}), so that "
                         "scdit.load can rebuild it.")
    return tok, TokenizerConfig(kind=kind, n_top_genes=int(getattr(tok, "n_top_genes", n_top_genes)),
                                max_tokens=int(getattr(tok, "max_tokens", max_tokens)))
