"""Networks: the velocity field, its DiT and MLP backbones and their building blocks."""

from ._blocks import DiTBlock, FinalLayer
from ._dit import DiT
from ._embed import GeneTokenEmbed, TimestepEmbedder, sinusoidal_embedding
from ._field import VelocityField
from ._mlp import MLPVelocity, dit_parameter_count

__all__ = ["DiT", "DiTBlock", "FinalLayer", "GeneTokenEmbed", "MLPVelocity", "TimestepEmbedder",
           "dit_parameter_count", "sinusoidal_embedding", "VelocityField"]
