"""Turn ``scdit.fit``'s ``tokenizer=`` into an unfitted tokenizer and its config."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import TokenizerConfig
from ._base import TOKENIZERS, Tokenizer, missing_members
from ._genes import GeneTokenizer
from ._pca import PCATokenizer
from ._scvi import ScVITokenizer, is_scvi_model

#: Fields of :class:`~scdit.TokenizerConfig` that each built-in tokenizer reads, besides
#: ``n_top_genes`` and ``max_tokens`` (shared by all).
TOKENIZER_OPTIONS: dict[str, tuple[str, ...]] = {
    "genes": ("gene_order", "patch_size", "encoding"),
    "pca": ("n_components", "patch_size"),
    "scvi": ("n_latent", "patch_size", "batch_key", "max_epochs", "gene_likelihood", "library"),
}

_SHARED = ("n_top_genes", "max_tokens")
#: Fields ``fit`` records about what it was given; they are not options.
_RECORDED = ("kind", "gene_features", "pretrained")
#: TokenizerConfig field -> attribute of a tokenizer object holding it.
_ATTRIBUTES = {"patch_size": "fixed_patch"}


def resolve_tokenizer(spec: Any, *, max_tokens: int, accelerator: str = "auto",
                      verbose: bool = False) -> tuple[Tokenizer, TokenizerConfig]:
    """An unfitted tokenizer and its :class:`~scdit.TokenizerConfig`.

    Parameters
    ----------
    spec
        A registered name (``"genes"``, ``"pca"``, ``"scvi"``, or one added with
        :func:`~scdit.tokenizers.register`; default options), a :class:`~scdit.TokenizerConfig`
        (kind and options), a trained ``scvi.model.SCVI``, or an
        unfitted tokenizer object of a registered class (for options that are not plain values,
        e.g. ``GeneTokenizer(gene_features=table)``; it keeps its own settings).
    max_tokens
        Token budget used when the config leaves ``max_tokens`` at ``None`` (the DiT preset's).
    accelerator, verbose
        Passed to a scVI tokenizer that scdit trains.

    Returns
    -------
    tuple
        The unfitted tokenizer and the config describing it (stored with the model).
    """
    if isinstance(spec, str):
        cfg, model = TokenizerConfig(kind=spec), None
    elif isinstance(spec, TokenizerConfig):
        cfg, model = spec, None
        _check_recorded(cfg)
    elif is_scvi_model(spec):
        cfg, model = TokenizerConfig(kind="scvi", pretrained=True), spec
    else:
        return _instance(spec)
    kind = cfg.kind
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {kind!r}; available: {sorted(TOKENIZERS)} (or a "
                         "trained scvi.model.SCVI, or a tokenizer instance).")
    if kind not in TOKENIZER_OPTIONS:  # a registered user class: built with its own defaults
        _check_options(cfg, ())
        return _instance(TOKENIZERS[kind]())
    _check_options(cfg, _SHARED + TOKENIZER_OPTIONS[kind])
    if cfg.max_tokens is None:
        cfg = dataclasses.replace(cfg, max_tokens=int(max_tokens))
    if kind == "genes":
        tok = GeneTokenizer(cfg.n_top_genes, cfg.max_tokens, cfg.gene_order, cfg.patch_size,
                            cfg.encoding)
    elif kind == "pca":
        tok = PCATokenizer(cfg.n_components, cfg.n_top_genes, cfg.max_tokens, cfg.patch_size)
    else:
        tok = ScVITokenizer(cfg.n_latent, cfg.n_top_genes, cfg.max_tokens, cfg.patch_size,
                            cfg.batch_key, cfg.max_epochs, gene_likelihood=cfg.gene_likelihood,
                            accelerator=accelerator, model=model, library=cfg.library,
                            verbose=verbose)
        cfg = dataclasses.replace(cfg, n_latent=tok.n_latent, batch_key=tok.batch_key,
                                  gene_likelihood=tok.gene_likelihood)
    return tok, cfg


def _check_recorded(cfg: TokenizerConfig) -> None:
    """Fields that record what ``fit`` was given cannot ask for it."""
    if cfg.gene_features:
        raise ValueError("TokenizerConfig.gene_features only records that gene features were "
                         "used; to use a table, pass tokenizer=GeneTokenizer(gene_features=table, "
                         "...).")
    if cfg.pretrained:
        raise ValueError("TokenizerConfig.pretrained only records that a trained SCVI model was "
                         "used; pass the trained scvi.model.SCVI itself as tokenizer= (or "
                         "ScVITokenizer(model=..., ...) for further options).")


def _check_options(cfg: TokenizerConfig, allowed: tuple[str, ...]) -> None:
    """Options set away from their defaults must apply to the chosen kind."""
    default = TokenizerConfig()
    bad = [f.name for f in dataclasses.fields(cfg) if f.name not in _RECORDED
           and f.name not in allowed and getattr(cfg, f.name) != getattr(default, f.name)]
    if bad:
        hint = (f"its options: {sorted(allowed)}" if allowed else
                "configure an instance of the tokenizer class instead")
        raise ValueError(f"TokenizerConfig option(s) {bad} do not apply to tokenizer "
                         f"{cfg.kind!r}; {hint}.")


def _instance(tok: Any) -> tuple[Tokenizer, TokenizerConfig]:
    """A tokenizer object given by the user, and the config read from its attributes."""
    if not isinstance(tok, Tokenizer):
        missing = missing_members(tok)
        raise TypeError(f"tokenizer must be a name {sorted(TOKENIZERS)}, a TokenizerConfig, a "
                        f"trained scvi.model.SCVI or a tokenizer object following "
                        f"scdit.tokenizers.Tokenizer; got {type(tok).__name__}"
                        f"{f', which lacks {missing}' if missing else ''} (inherit "
                        "scdit.tokenizers.BaseTokenizer for the optional abilities' defaults).")
    kind = getattr(tok, "kind", None)
    if TOKENIZERS.get(kind) is not type(tok):
        raise ValueError(f"Register the tokenizer class with @scdit.tokenizers.register(name) "
                         f"and set its kind to that name (got kind={kind!r}), so that "
                         "scdit.load can rebuild it.")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(TokenizerConfig):
        if f.name in _RECORDED:
            continue
        value = getattr(tok, _ATTRIBUTES.get(f.name, f.name), f.default)
        if value is None or isinstance(value, (bool, int, float, str)):
            values[f.name] = value
    return tok, TokenizerConfig(
        kind=kind, **values,
        gene_features=getattr(tok, "gene_features", None) is not None,
        pretrained=getattr(tok, "pretrained", None) is not None)
