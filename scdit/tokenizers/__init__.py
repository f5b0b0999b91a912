"""Tokenizers: expression ↔ tokens in gene space (``genes``), a PCA space (``pca``) or an scVI
latent space (``scvi``); more through :func:`register`. Each reports its reconstruction ceiling
(:func:`reconstruction_ceiling`)."""

from ._base import TOKENIZERS, Tokenizer, build_tokenizer, register, tokenizer_from_state
from ._build import TOKENIZER_OPTIONS, resolve_tokenizer
from ._ceiling import format_ceiling, reconstruct, reconstruction_ceiling
from ._genes import GeneTokenizer
from ._pca import PCATokenizer
from ._scvi import ScVITokenizer

__all__ = ["TOKENIZERS", "TOKENIZER_OPTIONS", "GeneTokenizer", "PCATokenizer", "ScVITokenizer",
           "Tokenizer", "build_tokenizer", "format_ceiling", "reconstruct",
           "reconstruction_ceiling", "register", "resolve_tokenizer", "tokenizer_from_state"]
