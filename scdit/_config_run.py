"""Run-time configurations: how a model samples (:class:`SamplingConfig`) and how it is trained
(:class:`TrainConfig`); frozen dataclasses, serialised as JSON like the model sections."""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_field

#: Values of :attr:`SamplingConfig.precision`.
SAMPLING_PRECISIONS = ("auto", "bf16", "fp32")
#: Values of :attr:`SamplingConfig.unmodelled_genes`.
UNMODELLED_GENES = ("decode", "carry")
#: Values of ``SamplingConfig.spread``.
SPREADS = ("auto", "calibrated", "raw")
#: Values of :attr:`TrainConfig.compile`.
COMPILE_MODES = ("auto", True, False)


@dataclass(frozen=True)
class SamplingConfig:
    """How ``predict`` / ``sample`` integrate the flow (``None``: the model's
    :class:`FlowConfig` value).

    Attributes
    ----------
    steps
        ODE steps from the source (``t = 1``) to data (``t = 0``).
    solver
        ``"euler"``, ``"heun"``, ``"midpoint"`` or ``"rk4"`` (see :data:`scdit.flow.SOLVERS`).
    guidance_scale
        Classifier-free guidance scale, ``v = v_null + s (v_cond − v_null)``: 1 is the plain
        conditional model, 0 the unconditional one (the mixture of the training cells).
        ``None`` (automatic): 1 for labels whose members were all seen in training; for a
        label with a member known only through its perturbation features, the model's
        feature reliability (``model.summary["feature_reliability"]["scale"]``, in
        ``[0, 1]``): the evidence that feature-based predictions of the seen perturbations'
        effects, each perturbation left out, correlate with the real ones
        (:func:`scdit.conditions.feature_reliability`). Such a label's cells (its whole
        velocity, a seen member's term of a combination included) move from the unconditional
        model towards its feature-based condition only as far as the features earned. 1 for
        models saved without it, and for models whose unconditional branch was not trained
        (``DiTConfig.cond_dropout=0``, or reflowed: :func:`scdit.reflow`).
    compose
        For combinations ``A+B``: weight ``w`` of composing the members' velocity fields,
        ``v = (1 − w) v_AB + w (v_A + v_B − v_control)``. ``None``: 0 for combinations seen in
        training, ``FlowConfig.compose`` for unseen ones.
    batch_size
        Cells integrated at a time (does not change the cells). The default suits CPUs, whose
        caches hold the activations of a few hundred cells (``benchmarks/run.py speed``:
        faster than 2,048); on a GPU a larger batch (thousands) keeps the device busy.
    precision
        Arithmetic of the velocity network while sampling: ``"auto"`` (bf16 autocast where the
        hardware multiplies bf16 natively, :func:`scdit.models.bf16_supported`, else fp32),
        ``"bf16"`` or ``"fp32"``. The ODE state and the solver's updates stay in fp32.
    center_noise
        Centre the Gaussian draws of each block of up to :data:`scdit.model.NOISE_BLOCK` cells
        and rescale them by ``sqrt(b / (b − 1))``: each cell's noise stays exactly standard
        normal, the block's noise sums to zero. A variance-reduction device: the generated
        population's mean carries less Monte-Carlo noise. ``False``: independent draws.
    invert
        For a model that generates from noise (``FlowConfig.source="noise"``): ``True`` starts
        each generated cell from the noise point that the *control* condition's flow carries
        to its reference cell (the source cell, or a stored control cell of the context),
        found by running the flow backwards with the same solver and steps, then integrates
        the perturbation's flow from there: the cell's counterfactual under the perturbation.
        The generator's errors common to both conditions cancel, and a control cell comes
        back as itself (up to the solver's error; and to bf16 rounding where the network runs
        in bf16, see ``precision``). A cell is a deterministic function of its reference cell:
        predict at most one cell per source cell (repeats are copies, with a warning). Without
        ``source``, the reference cells are stored control cells of the context (their library
        sizes and unmodelled genes are carried over). ``False``: independent Gaussian noise.
        ``None`` (automatic, ``predict`` only): ``True``, where cells are predicted from given
        ``source`` cells, one cell per source cell, by a model not straightened by
        :func:`scdit.reflow` (not measured there), for a *seen* perturbation whose training
        mean sets its mean (``effects="auto"`` or ``"always"``) and for a label with a member
        known only through its perturbation features (any ``effects``). Also without
        ``source``: the latter then start from distinct stored control cells of the context,
        and a seen perturbation from distinct stored control cells of each of its reference
        cells' contexts (where enough are stored; its own stored cells stay its reference
        cells); ``False`` otherwise (``sample`` always starts from noise unless ``True``).
        Such cells depend on the seed only through the stored cells it draws. There the
        counterfactuals matched the real held-out cells' distribution better than noise starts
        (seen-perturbation and unseen-target benchmarks, docs/results.md); for the other
        generator-set means and for unseen combinations of seen members they did not. Not
        available for control-source models (they transport their source cells already).
    unmodelled_genes
        The genes the tokenizer does not model, in cells whose mean the generator sets (no
        effect estimate: ``effects="none"``, and labels no estimator covers): ``"decode"``
        (default) shifts the reference cells' values, per context, by the change that the
        generated genes' mean change implies (:class:`scdit.model.GeneDecoder`, a linear map
        fitted on the stored training cells without their labels); ``"carry"`` copies the
        reference cells' values, i.e. predicts no change outside the model. Where an estimate
        sets the mean, it sets theirs too.
    spread
        The generated cells' spread around their mean: ``"calibrated"`` widens (or narrows)
        each context's deviations from its mean, per token value, by how much wider the stored
        training cells are than the cells the generator makes for those same training groups
        (:func:`scdit.model.spread_factors`: no effect estimate and no held-out cell enters;
        token means are kept, decoded means too with the genes tokenizer); ``"raw"`` keeps the
        generated cells as they are. ``predict`` only (``sample`` is raw); never for models
        fitted with doses. ``"auto"``
        (default): calibrated for a model that transports control cells and was fitted with
        held-out contexts (there the learned transport was measured narrower than the real
        cells, and calibrating lowered the energy distance on most held-out Kang cell types and
        glioblastoma patients, docs/results.md), raw otherwise.
    """

    steps: int | None = None
    solver: str | None = None
    guidance_scale: float | None = None
    compose: float | None = None
    batch_size: int = 512
    center_noise: bool = True
    precision: str = "auto"
    invert: bool | None = None
    unmodelled_genes: str = "decode"
    spread: str = "auto"

    def __post_init__(self) -> None:
        if self.unmodelled_genes not in UNMODELLED_GENES:
            raise ValueError(f"SamplingConfig.unmodelled_genes = {self.unmodelled_genes!r} is "
                             f"not one of {list(UNMODELLED_GENES)}.")
        if self.spread not in SPREADS:
            raise ValueError(f"SamplingConfig.spread = {self.spread!r} is not one of "
                             f"{list(SPREADS)}.")
        check_field(self, "steps", integer=True, low=1, none_ok=True,
                    hint="None uses FlowConfig.steps")
        if self.solver is not None and not isinstance(self.solver, str):
            raise TypeError(f"SamplingConfig.solver must be a solver name or None, got "
                            f"{self.solver!r}.")
        check_field(self, "guidance_scale", low=0.0, none_ok=True,
                    hint="1 is the plain conditional model, 0 the unconditional one")
        check_field(self, "compose", low=0.0, high=1.0, none_ok=True,
                    hint="0 is the joint condition, 1 the composition of the members")
        check_field(self, "batch_size", integer=True, low=1)
        if self.precision not in SAMPLING_PRECISIONS:
            raise ValueError(f"SamplingConfig.precision = {self.precision!r} is not one of "
                             f"{list(SAMPLING_PRECISIONS)}.")
        if not isinstance(self.center_noise, bool):
            raise TypeError(f"SamplingConfig.center_noise must be True or False, got "
                            f"{self.center_noise!r}.")
        if self.invert is not None and not isinstance(self.invert, bool):
            raise TypeError(f"SamplingConfig.invert must be True, False or None, got "
                            f"{self.invert!r}.")


#: Lightning strategies ``TrainConfig.strategy`` accepts.
STRATEGIES = ("auto", "ddp", "ddp_spawn")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    ``max_steps=None`` picks a length from the data size and the flow's source
    (:func:`scdit.train.auto_max_steps`). ``max_minutes`` is an opt-in wall-time budget (default
    ``None``: none, so a fit is reproducible for a seed whatever the machine's load): a run
    that would overrun it is shortened, schedule included (:class:`scdit.train.TimeBudget`),
    and training stops at the budget in any case (the best EMA weights so far are kept).

    ``precision="auto"`` trains in bf16 mixed precision where the hardware multiplies bf16
    natively (GPUs that support it; CPUs with AMX or AVX-512 BF16), else fp32;
    ``accelerator="auto"`` uses a GPU when there is one. Conditions with fewer than
    ``min_cells`` cells trigger a warning.

    Checkpoints: with ``checkpoint_dir``, a complete checkpoint (``last.ckpt``: weights, EMA,
    optimiser, schedule, step, random states, the data loader's position and a fingerprint of
    the data and configuration) is written every ``checkpoint_every`` steps (``None``: every
    ``val_every`` steps), with or without a validation split, and ``checkpoint_dir/model`` holds
    the model as of that checkpoint (``scdit.load`` reads it). ``resume=True`` continues the run
    whose checkpoint is in ``checkpoint_dir`` (same data and configuration, else a
    ``ValueError`` says what differs; no checkpoint yet: a warning, and training starts); it
    ends with the model the uninterrupted run would have given. Without ``resume``, a folder
    that already holds a run's checkpoint is refused rather than overwritten. A fit on on-disk
    cells also keeps its checked statistics pass there (computed once per run, by global rank
    0 when several processes share the folder).

    Several devices (``scdit.fit(..., train={"devices": 4})``): ``devices`` per node and
    ``num_nodes`` nodes train one model with Lightning's ``strategy`` (``"auto"``: one device
    as is, several with ``"ddp"``; ``"ddp"``, ``"ddp_spawn"``; ``"fsdp"`` is refused: the EMA,
    gradient clipping and weight-decay groups need whole parameters). ``batch_size`` is
    per device: the effective batch is ``batch_size × devices × num_nodes``. Each process
    (rank) draws its own cells, noise and times; every rank ends with the same model.

    ``loader_workers``: DataLoader worker processes reading on-disk cells while the network
    trains (``fit`` on a path or a backed AnnData; each worker reads its share of the fetches;
    ``0``: read in the training process). Worth it when training is faster than one process
    reads, typically on GPUs. The workers' batches interleave, so the order of the batches,
    hence the model, depends on the number of workers (a fit stays deterministic for a value).

    ``calibrate_guidance``: after training, choose the guidance scale of the perturbations seen
    in training from the model's own cells (:func:`scdit.model.calibrate_seen_guidance`, seconds
    to a minute on a CPU; not for dose models or without condition dropout). ``False`` skips it:
    seen perturbations are then generated by the conditional flow (scale 1).
    """

    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_steps: int | None = None
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    val_fraction: float = 0.05
    val_every: int = 250
    patience: int = 8
    precision: str = "auto"
    accelerator: str = "auto"
    seed: int = 0
    max_minutes: float | None = None
    checkpoint_dir: str | None = None
    min_cells: int = 10
    checkpoint_every: int | None = None
    resume: bool = False
    compile: bool | str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    loader_workers: int = 0
    calibrate_guidance: bool = True

    def __post_init__(self) -> None:
        check_field(self, "loader_workers", integer=True, low=0,
                    hint="0 reads on-disk cells in the training process")
        check_field(self, "devices", integer=True, low=1,
                    hint="the number of devices (processes) per node")
        check_field(self, "num_nodes", integer=True, low=1)
        if self.strategy == "fsdp":
            raise ValueError(
                "TrainConfig.strategy='fsdp' is not supported: scdit's training keeps an EMA copy "
                "of the whole network and clips the gradients' norm and groups weight decay on "
                "the full parameters, which FSDP shards across devices. Use strategy='ddp' (or "
                "'auto'): every DiT preset fits on one device, and DDP trains one copy per "
                "device.")
        if not isinstance(self.strategy, str) or self.strategy not in STRATEGIES:
            raise ValueError(f"TrainConfig.strategy = {self.strategy!r} is not one of "
                             f"{list(STRATEGIES)} ('ddp': one copy of the network per device, "
                             "gradients averaged; 'ddp_spawn': the same, processes started "
                             "from this one).")
        check_field(self, "checkpoint_every", integer=True, low=1, none_ok=True,
                    hint="None writes a checkpoint every val_every steps")
        if self.compile not in COMPILE_MODES or isinstance(self.compile, int) \
                and not isinstance(self.compile, bool):
            raise ValueError(f"TrainConfig.compile = {self.compile!r} is not one of "
                             f"{list(COMPILE_MODES)} ('auto': compile the velocity network with "
                             "torch.compile for runs long enough to repay it).")
        if not isinstance(self.resume, bool):
            raise TypeError(f"TrainConfig.resume must be True or False, got {self.resume!r}.")
        if not isinstance(self.calibrate_guidance, bool):
            raise TypeError(f"TrainConfig.calibrate_guidance must be True or False, got "
                            f"{self.calibrate_guidance!r}.")
        if self.checkpoint_dir is None and (self.resume or self.checkpoint_every is not None):
            what = "resume=True" if self.resume else f"checkpoint_every={self.checkpoint_every}"
            raise ValueError(f"TrainConfig: {what} needs checkpoint_dir, the folder the "
                             "checkpoints are written to (and resumed from).")
        check_field(self, "max_steps", integer=True, low=1, none_ok=True,
                    hint="None picks the length from the data")
        check_field(self, "max_minutes", low=0.0, low_open=True, none_ok=True,
                    hint="None disables the time budget")
        for name in ("batch_size", "val_every", "patience"):
            check_field(self, name, integer=True, low=1)
        for name in ("warmup_steps", "seed", "min_cells"):
            check_field(self, name, integer=True, low=0)
        check_field(self, "lr", low=0.0, low_open=True)
        check_field(self, "weight_decay", low=0.0)
        check_field(self, "grad_clip", low=0.0, hint="0 disables clipping")
        check_field(self, "ema_decay", low=0.0, high=1.0, high_open=True)
        check_field(self, "val_fraction", low=0.0, high=1.0, high_open=True)
