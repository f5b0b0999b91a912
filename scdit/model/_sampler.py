"""The generator: integrate the velocity field from the source to cells of a condition."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import SamplingConfig, ScDiTConfig
from ..data import ConditionVocab, CovariateVocab, canonical_label, parse_doses
from ..flow import composed, guided, integrate
from ..models import VelocityField, bf16_supported

#: Most cells whose Gaussian draws are centred together (``SamplingConfig.center_noise``).
NOISE_BLOCK = 1024
#: Seconds a prediction runs before its progress bar appears (quick calls print nothing).
PROGRESS_DELAY = 2.0


def sampling_bf16(precision: str, device: torch.device | str) -> bool:
    """Whether the velocity network runs under bf16 autocast: ``precision="bf16"``, or
    ``"auto"`` where :func:`scdit.models.bf16_supported` says the device multiplies bf16
    natively."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}.")
    return precision == "bf16" or (precision == "auto" and bf16_supported(device))


def progress_bar(total: int, batch_size: int, verbose: bool, desc: str):
    """A tqdm bar over ``total`` cells integrated in batches of ``batch_size``, or ``None``:
    shown when ``verbose`` and the cells take more than one batch, and only once the call has
    run for :data:`PROGRESS_DELAY` seconds."""
    if not verbose or total <= batch_size:
        return None
    from tqdm import tqdm

    return tqdm(total=int(total), desc=desc, unit="cells", delay=PROGRESS_DELAY)


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


@dataclass
class SampleJob:
    """The integration of one label's ``n`` cells (see :meth:`Generator.job`).

    ``atoms`` ``(n, M)``, ``covs`` ``(n, K)`` and ``doses`` ``(n, M)`` (or ``None``) condition
    each cell; ``noise`` and ``source`` (tokens ``(n, T, P)`` of a control-source model, or
    ``None``) give its start; ``shared``: the velocity is the joint condition alone, so the
    cells may share batches with other such jobs; ``sink(first_row, tokens)`` receives the
    generated cells in consecutive batches. ``invert``: ``source`` holds cells of a
    noise-source model, each started from the point the control condition's flow carries it
    from (the flow run backwards, :meth:`Generator.run`) instead of from noise. ``scale``: the
    classifier-free guidance scale of the label (:meth:`Generator.guidance`). ``carry``: the
    cells are their ``source`` tokens as they are, not integrated (a label the model cannot
    place, :func:`scdit.conditions.stand_ins`: the control cells its estimate then shifts).
    """

    label: str
    n: int
    atoms: torch.Tensor
    covs: torch.Tensor
    doses: torch.Tensor | None
    noise: NoiseStream
    source: torch.Tensor | None
    sigma: float
    weight: float
    shared: bool
    sink: Callable[[int, torch.Tensor], None]
    invert: bool = False
    scale: float = 1.0
    carry: bool = False

    def start(self, a: int, b: int) -> torch.Tensor:
        """The starting points ``(b − a, T, P)`` of cells ``a`` to ``b − 1`` (read in order);
        for an ``invert`` job, the cells to invert."""
        if self.invert:
            return self.source[a:b].float()
        x1 = self.noise.take(a, b)
        if self.source is not None:
            x1 = self.source[a:b].float() + self.sigma * x1
        return x1


class Generator:
    """Tokens of cells under a condition, from the trained velocity field alone.

    Parameters
    ----------
    field
        The trained velocity field ``v(x, t, cond)``.
    config, vocab, covariates
        The model's configuration and vocabularies.
    shape
        ``(T, P)`` of a cell's tokens.
    feature_scale
        Guidance scale of labels with a member known only through its features where
        ``SamplingConfig.guidance_scale`` is ``None`` (the fit's
        :func:`scdit.conditions.feature_reliability`).
    seen_scale
        Guidance scale of the perturbed labels seen in training where
        ``SamplingConfig.guidance_scale`` is ``None`` (the fit's
        :func:`calibrate_seen_guidance`).
    """

    def __init__(self, field: VelocityField, config: ScDiTConfig, vocab: ConditionVocab,
                 covariates: CovariateVocab, shape: tuple[int, int], feature_scale: float = 1.0,
                 seen_scale: float = 1.0):
        self.field = field
        self.shape = shape
        self.config = config
        self.vocab = vocab
        self.covariates = covariates
        self.feature_scale = float(feature_scale)
        self.seen_scale = float(seen_scale)
        self._seen_atoms = frozenset(vocab.atoms)
        self._seen_labels = frozenset(self._canonical(c) for c in vocab.conditions
                                      if self._canonical(c) != vocab.control)

    def _canonical(self, label: str) -> str:
        return canonical_label(str(label), self.vocab.control, self.vocab.separator)

    def stand_in(self, label: str) -> bool:
        """Whether ``label`` has a member neither seen nor known through features: a label the
        model cannot place, generated as control (:func:`scdit.conditions.stand_ins`)."""
        return bool(self.vocab.unknown_atoms([label]))

    def featured_only(self, label: str) -> bool:
        """Whether ``label`` has a member never seen in training (known only through its
        perturbation features)."""
        return any(m not in self._seen_atoms for m in self.vocab.members(label))

    def guidance(self, label: str, sampling: SamplingConfig, seen_context: bool = True) -> float:
        """The guidance scale of ``label``: ``SamplingConfig.guidance_scale``, else
        ``feature_scale`` for a label with a member known only through its features,
        ``seen_scale`` for a perturbed label seen in training in the cells' contexts
        (``seen_context``; the scale was chosen on such pairs, and on held-out contexts it did
        not transfer) and 1 for the rest (the control label, stand-ins, held-out contexts, unseen
        combinations of seen members)."""
        if sampling.guidance_scale is not None:
            return float(sampling.guidance_scale)
        if self.stand_in(label):  # generated as control
            return 1.0
        if self.featured_only(label):
            return self.feature_scale
        seen = seen_context and self._canonical(label) in self._seen_labels
        return self.seen_scale if seen else 1.0

    def in_seen_contexts(self, label: str, cov_df: pd.DataFrame | None,
                         seen_in_context) -> bool:
        """Whether every row of ``cov_df`` is a context ``label`` was seen in (``True``
        without covariates); ``seen_in_context(label, cov_df)`` answers per row."""
        if not self.covariates.keys or cov_df is None:
            return True
        return bool(np.all(seen_in_context(label, cov_df)))

    def inverts(self, sampling: SamplingConfig) -> bool:
        """Whether all generated cells start from their inverted reference cells
        (``SamplingConfig.invert=True``; a clear error for a control-source model; the
        automatic choice of ``None`` is made per label by ``predict``)."""
        if self.config.flow.source == "control":
            if sampling.invert:
                raise ValueError("SamplingConfig(invert=True) is for models that generate from "
                                 "noise; this model transports its source cells already "
                                 "(FlowConfig.source='control'). Leave invert=None.")
            return False
        return bool(sampling.invert)

    def compose_weight(self, label: str, compose: float | None, seen: set) -> float:
        """Weight of member composition: ``compose``, else 0 for seen combinations and
        ``FlowConfig.compose`` for unseen ones (``seen``: canonical training labels)."""
        if compose is not None:
            return float(compose)
        canonical = canonical_label(label, self.vocab.control, self.vocab.separator)
        return 0.0 if canonical in seen else self.config.flow.compose

    def velocity(self, label: str, atoms: torch.Tensor, covs: torch.Tensor, scale: float,
                 weight: float, dose: torch.Tensor | None = None, field: Callable | None = None):
        """Guided velocity for ``label``; combinations composed from their members with
        ``weight`` (``v = (1 − w) v_AB + w (Σ v_m − (k − 1) v_control)``). ``field``: the
        network to evaluate (default the fp32 field; see :meth:`network`)."""
        field = self.field if field is None else field

        def cond(a, d):
            c = {"atoms": a, "covariates": covs}
            if d is not None:
                c["dose"] = d
            return c

        v_joint = guided(field, cond(atoms, dose), scale)
        members = self.vocab.members(label)
        if weight == 0.0 or len(members) < 2:
            return v_joint
        terms = [] if weight == 1.0 else [(v_joint, 1.0 - weight)]
        for j, m in enumerate(members):  # members are sorted, as the columns of atoms and dose
            a = torch.as_tensor(self.vocab.encode([m] * len(atoms)), device=atoms.device)
            d = None if dose is None else dose[:, j:j + 1]
            terms.append((guided(field, cond(a, d), scale), weight))
        ctrl = torch.zeros_like(atoms[:, :1])
        terms.append((guided(field, cond(ctrl, None), scale), -weight * (len(members) - 1)))
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

    def network(self, device: torch.device, precision: str) -> Callable:
        """The velocity network ``v(x, t, cond)`` as the sampler calls it: the field itself in
        fp32, or under bf16 autocast with its output cast back to fp32 (``precision``:
        ``"bf16"``, ``"fp32"`` or ``"auto"``, see :func:`sampling_bf16`)."""
        if not sampling_bf16(precision, device):
            return self.field
        field, kind = self.field, torch.device(device).type

        def bf16(x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
            with torch.autocast(kind, dtype=torch.bfloat16):
                out = field(x, t, cond)
            return out.float()

        return bf16

    def job(self, label: str, n: int, covs: torch.Tensor, *, gen: torch.Generator,
            sampling: SamplingConfig, weight: float, dose=None,
            source_tokens: torch.Tensor | None = None,
            sink: Callable[[int, torch.Tensor], None], invert: bool = False,
            seen_context: bool = True) -> SampleJob:
        """The integration of ``n`` cells of ``label`` with covariate codes ``covs`` ``(n, K)``,
        from Gaussian noise (``gen``, drawn by :class:`NoiseStream`), from ``source_tokens``
        plus ``FlowConfig.source_noise`` × noise for a control-source model, or (``invert``, a
        noise-source model) from the noise that the control condition's flow carries to
        ``source_tokens``; its cells go to ``sink(first_row, tokens)`` in consecutive batches
        (run it with :meth:`run`). A label the model cannot place (a stand-in) is generated
        under the control condition, or, given ``source_tokens``, is those tokens
        (``SampleJob.carry``)."""
        t, p = self.shape
        if invert and source_tokens is None:
            raise ValueError("invert=True needs the tokens of the cells to invert "
                             "(source_tokens).")
        stand_in = self.stand_in(label)
        atoms = torch.as_tensor(self.vocab.encode([self.vocab.control if stand_in else label] * n))
        carry = stand_in and source_tokens is not None  # control cells, as they are
        sigma = self.config.flow.source_noise if self.config.flow.source == "control" else 1.0
        shared = float(weight) == 0.0 or len(self.vocab.members(label)) < 2
        return SampleJob(label, n, atoms, covs, self.dose_tensor(label, dose, n, atoms.shape[1]),
                         NoiseStream(n, (t, p), gen, sampling.center_noise), source_tokens,
                         sigma, float(weight), shared, sink, bool(invert) and not carry,
                         self.guidance(label, sampling, seen_context), carry)

    def run(self, jobs: Iterable[SampleJob], sampling: SamplingConfig, device: torch.device,
            progress=None) -> None:
        """Integrate ``jobs`` in order, in batches of up to ``sampling.batch_size`` cells.

        Consecutive jobs whose velocity is the joint condition alone (``SampleJob.shared``)
        share batches: only the network evaluations are batched, each job's noise and source
        come from its own streams (and only jobs of the same guidance scale and start: noise or
        inverted). A composed job gets batches of its own. Each batch's cells
        go to their jobs' sinks in job order; ``progress`` (a tqdm bar) counts the cells.
        The cells of ``invert`` jobs are first integrated from ``t = 0`` up to ``t = 1`` under
        the control condition (with their covariates), with the same solver and steps. The
        cells of ``carry`` jobs are their source tokens."""
        bs, net = int(sampling.batch_size), self.network(device, sampling.precision)
        kw = {"steps": sampling.steps or self.config.flow.steps,
              "solver": sampling.solver or self.config.flow.solver}
        batch: list[tuple[SampleJob, int, int]] = []

        def flush() -> None:
            if not batch:
                return
            x1 = torch.cat([j.start(a, b) for j, a, b in batch]).to(device)
            if any(j.invert for j, _, _ in batch):
                if not all(j.invert for j, _, _ in batch):
                    raise ValueError("A batch mixes inverted and noise starts.")
                x1 = integrate(self._control_velocity(batch, net, device), x1, t_start=0.0,
                               t_end=1.0, **kw)
            x0 = integrate(self._batch_velocity(batch, net, device), x1, **kw).cpu()  # (b, T, P)
            done = 0
            for j, a, b in batch:
                j.sink(a, x0[done:done + b - a])
                done += b - a
            if progress is not None:
                progress.update(done)
            batch.clear()

        for job in jobs:
            if job.carry:  # nothing to integrate
                flush()
                for s in range(0, job.n, bs):
                    e = min(job.n, s + bs)
                    job.sink(s, job.source[s:e].float())
                    if progress is not None:
                        progress.update(e - s)
                continue
            if not job.shared or (batch and (batch[0][0].invert, batch[0][0].scale)
                                  != (job.invert, job.scale)):
                flush()
            s = 0
            while s < job.n:
                e = min(job.n, s + bs - sum(b - a for _, a, b in batch))
                batch.append((job, s, e))
                if not job.shared or sum(b - a for _, a, b in batch) >= bs:
                    flush()
                s = e
            if not job.shared:
                flush()
        flush()

    def _control_velocity(self, batch: list[tuple[SampleJob, int, int]], net: Callable,
                          device: torch.device) -> Callable:
        """Velocity of the control condition (unguided: the flow that carries a control cell
        to its noise) for the batch's cells (their covariates; dose 0 in a dose model)."""
        covs = torch.cat([j.covs[a:b] for j, a, b in batch]).to(device)
        cond = {"atoms": torch.zeros((len(covs), 1), dtype=torch.long, device=device),
                "covariates": covs}
        if batch[0][0].doses is not None:
            cond["dose"] = torch.zeros((len(covs), 1), device=device)
        return guided(net, cond, 1.0)

    def _batch_velocity(self, batch: list[tuple[SampleJob, int, int]], net: Callable,
                        device: torch.device) -> Callable:
        """Velocity of one batch: :meth:`velocity` for a single job's cells, else the guided
        joint condition of all the batch's cells (atoms 0-padded to the widest label; the
        jobs of a batch share their guidance scale)."""
        scale = batch[0][0].scale
        if len(batch) == 1:
            j, a, b = batch[0]
            return self.velocity(j.label, j.atoms[a:b].to(device), j.covs[a:b].to(device),
                                 scale, j.weight, None if j.doses is None
                                 else j.doses[a:b].to(device), field=net)
        width = max(j.atoms.shape[1] for j, _, _ in batch)

        def pad(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, width - x.shape[1]))

        cond = {"atoms": torch.cat([pad(j.atoms[a:b]) for j, a, b in batch]).to(device),
                "covariates": torch.cat([j.covs[a:b] for j, a, b in batch]).to(device)}
        if batch[0][0].doses is not None:
            cond["dose"] = torch.cat([pad(j.doses[a:b]) for j, a, b in batch]).to(device)
        return guided(net, cond, scale)

    def generate(self, label: str, n: int, covs: torch.Tensor, *, gen: torch.Generator,
                 sampling: SamplingConfig, weight: float, dose=None,
                 source_tokens: torch.Tensor | None = None, device: torch.device,
                 sink: Callable[[int, torch.Tensor], None] | None = None,
                 progress=None) -> torch.Tensor | None:
        """Generated tokens ``(n, T, P)`` of one label (see :meth:`job`). With ``sink``, each
        batch is passed to ``sink(first_row, tokens)`` instead of being kept (returns None)."""
        out = None if sink is not None else torch.empty((n, *self.shape))

        def keep(start: int, x0: torch.Tensor) -> None:
            out[start:start + len(x0)] = x0

        job = self.job(label, n, covs, gen=gen, sampling=sampling, weight=weight, dose=dose,
                       source_tokens=source_tokens, sink=sink or keep)
        self.run([job], sampling, device, progress)
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
            if self.stand_in(label):  # generated as control
                label = self.vocab.control
            covs[torch.as_tensor(~seen_in_context(label, cov_df))] = 0
        return covs


def sampling_record(sampling: SamplingConfig, flow, device: torch.device,
                    transport_only: bool) -> dict:
    """The sampling settings a prediction used (``uns["scdit"]``)."""
    return {"guidance_scale": "auto" if sampling.guidance_scale is None
            else sampling.guidance_scale, "steps": sampling.steps or flow.steps,
            "solver": sampling.solver or flow.solver,
            "compose": "auto" if sampling.compose is None else sampling.compose,
            "precision": "bf16" if sampling_bf16(sampling.precision, device) else "fp32",
            "invert": False if transport_only else "auto" if sampling.invert is None
            else sampling.invert, "unmodelled_genes": sampling.unmodelled_genes,
            "spread": sampling.spread}
