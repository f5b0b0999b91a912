"""Tokenizers: expression ↔ tokens (``genes``; more through :func:`register`)."""

from ._base import TOKENIZERS, Tokenizer, build_tokenizer, register
from ._genes import GeneTokenizer

__all__ = ["TOKENIZERS", "GeneTokenizer", "Tokenizer", "build_tokenizer", "register"]
