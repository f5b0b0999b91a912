"""Rectified flow (``t = 0`` data, ``t = 1`` source): path, time sampling, loss, solvers."""

from ._guidance import composed, guided
from ._loss import flow_matching_loss
from ._path import interpolate, target_velocity
from ._solvers import SOLVERS, integrate
from ._source import noise_like, ot_pairing
from ._time import get_time_sampler, logit_normal, uniform, uniform_end

__all__ = ["SOLVERS", "composed", "flow_matching_loss", "get_time_sampler", "guided", "integrate",
           "interpolate", "logit_normal", "noise_like", "ot_pairing", "target_velocity", "uniform",
           "uniform_end"]
