"""Tokenizers: expression ↔ tokens in gene space (``genes``), a PCA space (``pca``) or an scVI
latent space (``scvi``); more through :func:`register`. Each reports its reconstruction ceiling
(:func:`reconstruction_ceiling`) and declares its optional abilities (:class:`BaseTokenizer`)."""

from ._base import (
    TOKENIZERS,
    BaseTokenizer,
    Tokenizer,
    build_tokenizer,
    register,
    tokenizer_from_state,
)
from ._build import TOKENIZER_OPTIONS, resolve_tokenizer
from ._ceiling import format_ceiling, reconstruct, reconstruction_ceiling
from ._genes import GeneTokenizer, coexpression_order, select_genes
from ._pca import PCATokenizer
from ._rank import RankCodec
from ._scvi import ScVITokenizer

__all__ = ["TOKENIZERS", "TOKENIZER_OPTIONS", "BaseTokenizer", "GeneTokenizer", "PCATokenizer",
           "RankCodec", "ScVITokenizer", "Tokenizer", "build_tokenizer", "coexpression_order",
           "format_ceiling", "reconstruct", "reconstruction_ceiling", "register",
           "resolve_tokenizer", "select_genes", "tokenizer_from_state"]
