"""Networks: the velocity field, its DiT and MLP backbones, their building blocks, and which
precision the hardware runs them fastest in."""

from ._blocks import DiTBlock, FinalLayer
from ._dit import DiT
from ._embed import GeneTokenEmbed, TimestepEmbedder, sinusoidal_embedding
from ._field import VelocityField
from ._marks import TargetMarks, target_slots
from ._mlp import MLPVelocity, dit_parameter_count
from ._precision import CPU_BF16_FLAGS, bf16_supported, cpu_has_fast_bf16

__all__ = ["CPU_BF16_FLAGS", "DiT", "DiTBlock", "FinalLayer", "GeneTokenEmbed", "MLPVelocity", "TargetMarks", "TimestepEmbedder",
           "dit_parameter_count", "sinusoidal_embedding", "VelocityField", "bf16_supported", "cpu_has_fast_bf16",
           "target_slots"]
