"""Networks: the DiT velocity field and its building blocks."""

from ._blocks import DiTBlock, FinalLayer
from ._dit import DiT
from ._embed import GeneTokenEmbed, TimestepEmbedder, sinusoidal_embedding
from ._field import VelocityField

__all__ = ["DiT", "DiTBlock", "FinalLayer", "GeneTokenEmbed", "TimestepEmbedder",
           "sinusoidal_embedding", "VelocityField"]
