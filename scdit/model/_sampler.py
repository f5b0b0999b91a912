"""The generator: integrate the velocity field from the source to cells of a condition."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from ..config import SamplingConfig, ScDiTConfig
from ..data import ConditionVocab, CovariateVocab, canonical_label, parse_doses
from ..flow import composed, guided, integrate
from ..models import VelocityField

#: Most cells whose Gaussian draws are centred together (``SamplingConfig.center_noise``).
NOISE_BLOCK = 1024


class NoiseStream:
    """Gaussian draws for ``n`` cells, read in consecutive slices of any size.

    The draws come in blocks that do not depend on the slices read (``n`` split into
    ``ceil(n / NOISE_BLOCK)`` blocks of near-equal size), so that a prediction's cells do not
    depend on ``SamplingConfig.batch_size``. With ``center``, each block of ``b ≥ 2`` cells is
    centred per coordinate and rescaled by ``sqrt(b / (b − 1))``: every cell's draw is still
    exactly standard normal, and the block's draws sum to zero.
    """

    def __init__(self, n: int, shape: tuple[int, ...], gen: torch.Generator, center: bool):
        self.shape, self.gen, self.center = tuple(shape), gen, bool(center)
        k = max(1, -(-n // NOISE_BLOCK))
        sizes = [n // k + (i < n % k) for i in range(k)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._block, self._first, self._stop = None, 0, 0
        self._next = 0  # the first cell of the next slice

    def _next_block(self) -> None:
        i = int(np.searchsorted(self.starts, self._stop, side="right")) - 1
        b = int(self.starts[i + 1] - self.starts[i])
        x = torch.randn((b, *self.shape), generator=self.gen)
        if self.center and b >= 2:
            x = (x - x.mean(0, keepdim=True)) * float(np.sqrt(b / (b - 1)))
        self._block, self._first, self._stop = x, int(self.starts[i]), int(self.starts[i + 1])

    def take(self, start: int, stop: int) -> torch.Tensor:
        """Draws of cells ``start`` to ``stop − 1`` (each slice starts where the last one
        stopped, the first at 0)."""
        n = int(self.starts[-1])
        if start != self._next or not start <= stop <= n:
            raise ValueError(f"NoiseStream reads consecutive slices of its {n} cells: the next "
                             f"one starts at {self._next} and ends at most at {n}, got "
                             f"{start}:{stop}.")
        self._next = stop
        if start == stop:
            return torch.empty((0, *self.shape))
        parts = []
        while start < stop:
            if self._block is None or start >= self._stop:
                self._next_block()
            end = min(stop, self._stop)
            parts.append(self._block[start - self._first:end - self._first])
            start = end
        return torch.cat(parts) if len(parts) != 1 else parts[0]


class Generator:
    """Tokens of cells under a condition, from the trained velocity field alone.

    Parameters
    ----------
    field
        The trained velocity field ``v(x, t, cond)``.
    config, vocab, covariates
        The model's configuration and vocabularies.
    """

    def __init__(self, field: VelocityField, config: ScDiTConfig, vocab: ConditionVocab,
                 covariates: CovariateVocab, shape: tuple[int, int]):
        self.field = field
        self.shape = shape  # (T, P) of a cell's tokens
        self.config = config
        self.vocab = vocab
        self.covariates = covariates

    def compose_weight(self, label: str, compose: float | None, seen: set) -> float:
        """Weight of member composition: ``compose``, else 0 for seen combinations and
        ``FlowConfig.compose`` for unseen ones (``seen``: canonical training labels)."""
        if compose is not None:
            return float(compose)
        canonical = canonical_label(label, self.vocab.control, self.vocab.separator)
        return 0.0 if canonical in seen else self.config.flow.compose

    def velocity(self, label: str, atoms: torch.Tensor, covs: torch.Tensor, scale: float,
                 weight: float, dose: torch.Tensor | None = None):
        """Guided velocity for ``label``; combinations composed from their members with
        ``weight`` (``v = (1 − w) v_AB + w (Σ v_m − (k − 1) v_control)``)."""

        def cond(a, d):
            c = {"atoms": a, "covariates": covs}
            if d is not None:
                c["dose"] = d
            return c

        v_joint = guided(self.field, cond(atoms, dose), scale)
        members = self.vocab.members(label)
        if weight == 0.0 or len(members) < 2:
            return v_joint
        terms = [] if weight == 1.0 else [(v_joint, 1.0 - weight)]
        for j, m in enumerate(members):  # members are sorted, as the columns of atoms and dose
            a = torch.as_tensor(self.vocab.encode([m] * len(atoms)), device=atoms.device)
            d = None if dose is None else dose[:, j:j + 1]
            terms.append((guided(self.field, cond(a, d), scale), weight))
        ctrl = torch.zeros_like(atoms[:, :1])
        terms.append((guided(self.field, cond(ctrl, None), scale), -weight * (len(members) - 1)))
        return composed(terms)

    def dose_tensor(self, label: str, dose, n: int, width: int) -> torch.Tensor | None:
        """Per-cell doses ``(n, width)`` for a dose model (clear errors otherwise)."""
        key = self.config.data.dose_key
        if key is None:
            if dose is not None:
                raise ValueError("This model was trained without dose_key; do not pass dose.")
            return None
        if dose is None:
            if label == self.vocab.control:
                dose = 0.0
            else:
                raise ValueError(f"This model was trained with doses (obs[{key!r}]); pass dose= "
                                 "(a number, or 'a+b' for the members of a combination).")
        arr = parse_doses([label], [dose], self.vocab, width, key)
        return torch.as_tensor(np.repeat(arr, n, axis=0))

    def generate(self, label: str, n: int, covs: torch.Tensor, *, gen: torch.Generator,
                 sampling: SamplingConfig, weight: float, dose=None,
                 source_tokens: torch.Tensor | None = None, device: torch.device,
                 sink: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor | None:
        """Generated tokens ``(n, T, P)`` of ``label`` with covariate codes ``covs`` ``(n, K)``,
        integrated from Gaussian noise (``gen``, drawn by :class:`NoiseStream`) or from
        ``source_tokens`` plus ``FlowConfig.source_noise`` × noise for a control-source model. With ``sink``, each
        batch is passed to ``sink(first_row, tokens)`` instead of being kept (returns None)."""
        t, p = self.shape
        atoms = torch.as_tensor(self.vocab.encode([label] * n))
        doses = self.dose_tensor(label, dose, n, atoms.shape[1])
        sigma = self.config.flow.source_noise if self.config.flow.source == "control" else 1.0
        kw = {"steps": sampling.steps or self.config.flow.steps,
              "solver": sampling.solver or self.config.flow.solver}
        out, bs = None if sink is not None else torch.empty((n, t, p)), int(sampling.batch_size)
        noise = NoiseStream(n, (t, p), gen, sampling.center_noise)
        for s in range(0, n, bs):
            sl = slice(s, min(n, s + bs))
            x1 = noise.take(sl.start, sl.stop)  # (b, T, P)
            if source_tokens is not None:
                x1 = source_tokens[sl].float() + sigma * x1
            v = self.velocity(label, atoms[sl].to(device), covs[sl].to(device),
                              sampling.guidance_scale, weight,
                              None if doses is None else doses[sl].to(device))
            x0 = integrate(v, x1.to(device), **kw).cpu()  # (b, T, P)
            if sink is not None:
                sink(sl.start, x0)
            else:
                out[sl] = x0
        return out

    def covariate_codes(self, label: str, cov_df: pd.DataFrame | None, n: int,
                        seen_in_context) -> torch.Tensor:
        """Covariate codes ``(n, K)``; with a control source trained with covariate dropout,
        rows of a (label, context) pair never seen in training drop their covariates (the
        source cells carry the context)."""
        if not self.covariates.keys:
            return torch.zeros((n, 0), dtype=torch.long)
        covs = torch.as_tensor(self.covariates.encode(cov_df))
        c = self.config
        if c.flow.source == "control" and bool(c.conditions.covariate_dropout):
            covs[torch.as_tensor(~seen_in_context(label, cov_df))] = 0
        return covs
