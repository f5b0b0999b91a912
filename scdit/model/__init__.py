"""The fitted model: the generator composed with effect estimates (predict / sample / save / load)."""

from ._calibrate import GUIDANCE_SCALES, calibrate_seen_guidance
from ._cells import LIBRARY_KEY, REFERENCE_CELLS, CellStore, make_reference
from ._decoder import DECODER_CELLS, DECODER_RANK, DECODER_RIDGE, GeneDecoder, fit_decoder
from ._io import FORMAT_VERSION, build_field, read_model, write_model
from ._model import ScDiT
from ._sampler import NOISE_BLOCK, PROGRESS_DELAY, Generator, NoiseStream, SampleJob
from ._spread import (
    SPREAD_CELLS,
    SPREAD_FLOOR,
    SPREAD_MIN_CELLS,
    SPREAD_RANGE,
    resolve_spread,
    spread_applies,
    spread_factors,
    widen,
)
from ._targets import EffectTargets

__all__ = ["DECODER_CELLS", "DECODER_RANK", "DECODER_RIDGE", "FORMAT_VERSION",
           "GUIDANCE_SCALES", "LIBRARY_KEY", "NOISE_BLOCK", "PROGRESS_DELAY", "REFERENCE_CELLS",
           "SPREAD_CELLS", "SPREAD_FLOOR", "SPREAD_MIN_CELLS", "SPREAD_RANGE",
           "CellStore", "EffectTargets", "GeneDecoder", "Generator", "NoiseStream", "SampleJob",
           "ScDiT", "build_field", "calibrate_seen_guidance", "fit_decoder", "make_reference",
           "read_model", "resolve_spread", "spread_applies", "spread_factors", "widen",
           "write_model"]
