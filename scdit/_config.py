"""Frozen dataclass configurations, serialised as JSON inside saved models."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._checks import check_field
from ._config_run import SamplingConfig, TrainConfig  # noqa: F401  (re-exported)
from ._schema import check_json, dataclass_schema

#: Plausible ranges of the size fields of each section: a configuration outside them is refused
#: when it is built (so ``fit`` never trains a model that ``load`` would refuse) and a saved one
#: as damaged or crafted, before any model is built (the ``"large"`` preset uses
#: ``hidden_size=768, depth=12``).
SIZE_LIMITS: dict[str, dict[str, tuple[float, float]]] = {
    "tokenizer": {"n_top_genes": (1, 1_000_000), "max_tokens": (1, 65536),
                  "patch_size": (1, 1_000_000), "n_components": (1, 100_000),
                  "n_latent": (1, 100_000)},
    "conditions": {"n_features": (0, 1_000_000), "n_components": (1, 100_000)},
    "dit": {"hidden_size": (1, 16384), "depth": (1, 512), "num_heads": (1, 1024),
            "mlp_ratio": (0.01, 64), "max_tokens": (1, 65536)},
}

def _check_sizes(config: Any, section: str) -> None:
    """Raise if a size field of ``config`` is outside :data:`SIZE_LIMITS` ``[section]``."""
    for name, (low, high) in SIZE_LIMITS[section].items():
        value = getattr(config, name)
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and not low <= value <= high:
            raise ValueError(f"{type(config).__name__}.{name} = {value!r} is outside its "
                             f"plausible range [{low}, {high}].")


@dataclass(frozen=True)
class DataConfig:
    """How the AnnData is read.

    Attributes
    ----------
    condition_key
        ``obs`` column holding the perturbation label of each cell.
    control
        Label of control cells in ``condition_key``.
    covariate_keys
        ``obs`` columns used as conditioning covariates (cell type, batch, ...).
    separator
        Separator between members of a combination label (``"A+B"``).
    layer
        Layer holding expression (``None`` = ``.X``).
    dose_key
        Numeric ``obs`` column with each perturbation's dose (``"a+b"`` strings give one dose per
        member of a combination); ``None`` = no dose.
    representation
        ``"counts"`` or ``"log1p"`` of the training input (detected when ``fit`` runs).
    """

    condition_key: str
    control: str
    covariate_keys: tuple[str, ...] = ()
    separator: str | None = "+"
    layer: str | None = None
    representation: str = "log1p"
    dose_key: str | None = None


@dataclass(frozen=True)
class TokenizerConfig:
    """Tokenizer settings (the space the DiT works in; see :mod:`scdit.tokenizers`).

    Attributes
    ----------
    kind
        Registry name of the tokenizer: ``"genes"``, ``"pca"``, ``"scvi"`` or a registered one.
    n_top_genes
        Number of highly variable genes to model (all genes when the data has fewer); measured
        perturbation targets are always kept.
    max_tokens
        Upper bound on tokens per cell (at most ~128); values are grouped into patches to respect
        it. ``None``: the DiT preset's token budget (:attr:`DiTConfig.max_tokens`), filled in by
        ``fit``.
    gene_order
        genes: ``"coexpression"`` (hierarchical clustering of gene correlations) or ``"given"``.
    patch_size
        Values (genes, components or latent dimensions) per token; overrides ``max_tokens``.
    encoding
        genes: ``"value"`` (standardised log1p) or ``"rank"`` (Geneformer-style rank values).
    n_components
        pca: principal components kept.
    n_latent
        scvi: latent dimensions.
    batch_key
        scvi: ``obs`` column of scVI's batch (must also be a covariate key).
    max_epochs
        scvi: training epochs (``None``: scvi-tools' default rule).
    gene_likelihood
        scvi: ``"nb"``, ``"zinb"`` or ``"poisson"``.
    library
        scvi: library size of generated counts, ``"source"`` (the source/reference cell's) or
        ``"generated"`` (transported by the flow as one more feature).
    gene_features
        genes: whether gene-identity embeddings were initialised from user gene features
        (recorded by ``fit``; to use a table, pass ``tokenizer=GeneTokenizer(gene_features=...)``).
    pretrained
        scvi: whether a trained ``scvi.model.SCVI`` was passed in (else scdit trained one;
        recorded by ``fit``).
    """

    kind: str = "genes"
    n_top_genes: int = 2000
    max_tokens: int | None = None
    gene_order: str = "coexpression"
    patch_size: int | None = None
    encoding: str = "value"
    n_components: int = 50
    n_latent: int = 32
    batch_key: str | None = None
    max_epochs: int | None = None
    gene_likelihood: str = "nb"
    library: str = "source"
    gene_features: bool = False
    pretrained: bool = False

    def __post_init__(self) -> None:
        _check_sizes(self, "tokenizer")


@dataclass(frozen=True)
class ConditionConfig:
    """How perturbations are described to the model.

    Attributes
    ----------
    features
        ``"none"`` (a learned embedding per seen perturbation), ``"data"`` (data-derived
        features of the target gene, see :func:`scdit.conditions.data_features`) or ``"table"``
        (a user table passed to ``fit``).
    n_features
        Width of the feature table (0 without features).
    n_components
        Principal components of the data-derived features.
    residual_dropout
        Probability of dropping a seen perturbation's learned residual in training, so the
        feature projection alone learns to place perturbations (with features only).
    covariate_dropout
        Probability of hiding a training cell's covariates (index 0, "context not given").
        ``None``: 0.5 with a control source and covariates, else 0. A model with a control
        source predicts a (perturbation, context) pair never seen in training without the
        covariates: the source cells carry the context, and the perturbation's effect comes
        from all contexts instead of from a context embedding that only ever saw controls.
    target_marks
        Mark each cell's targeted genes in the network's input: a genetic perturbation whose
        name is a modelled gene flags that gene's slot, and the network learns one shared way
        of reading a flag (:class:`scdit.models.TargetMarks`), so the on-target change it
        learns from the seen targets carries over to a measured gene it never saw perturbed.
        The flags stay when the perturbation label is dropped for classifier-free guidance.
        ``None`` (default): on when the tokenizer is ``"genes"`` and at least one perturbation
        seen in training is a modelled gene, else off; a fitted model stores the resolved
        value (model files saved before the option existed read ``False``).
    """

    features: str = "none"
    n_features: int = 0
    n_components: int = 32
    residual_dropout: float = 0.3
    covariate_dropout: float | None = None
    target_marks: bool | None = None

    def __post_init__(self) -> None:
        _check_sizes(self, "conditions")


#: Backbones of the velocity field (:attr:`DiTConfig.backbone`).
BACKBONES = ("dit", "mlp")
#: Activations of the MLPs of the backbones (:attr:`DiTConfig.activation`).
ACTIVATIONS = ("gelu", "gelu_tanh")
#: How training pairs cells with source draws (:attr:`FlowConfig.pairing`).
PAIRINGS = ("ot", "independent")


@dataclass(frozen=True)
class DiTConfig:
    """Diffusion Transformer (Peebles & Xie, 2023) with adaLN-Zero blocks; ``backbone="mlp"``:
    the attention-free :class:`scdit.models.MLPVelocity` instead (``depth`` residual blocks, same
    conditioning, width matched to the DiT's parameter count, ``num_heads`` unused).

    ``activation`` is the GELU of the MLPs: ``"gelu"`` (exact, erf) or ``"gelu_tanh"`` (the tanh
    approximation, about twice as slow on CPUs; what model files saved before the field existed
    used, and are read with)."""

    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    cond_dropout: float = 0.1
    max_tokens: int = 16
    backbone: str = "dit"
    activation: str = "gelu"

    def __post_init__(self) -> None:
        _check_sizes(self, "dit")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"DiTConfig.activation = {self.activation!r} is not an activation; "
                             f"choose from {list(ACTIVATIONS)}.")
        if self.backbone not in BACKBONES:
            raise ValueError(f"DiTConfig.backbone = {self.backbone!r} is not a backbone; choose "
                             f"from {list(BACKBONES)} (the DiT, or the attention-free MLP).")


@dataclass(frozen=True)
class FlowConfig:
    """Rectified flow: ``x_t = t x1 + (1 - t) x0``, ``t = 0`` data, ``t = 1`` source.

    ``source`` is ``"noise"`` (standard Gaussian: generate) or ``"control"`` (control cells of
    the same covariate context, paired by minibatch optimal transport within each context and
    condition, plus ``source_noise``-scaled Gaussian noise: transport control cells to their
    perturbed state). ``source_noise`` ``None`` (default) is set by ``fit``: 0.1 (standardised
    units) for a control source, whatever the design (:func:`scdit.train.default_source_noise`).
    Versions before 2026-12-04 used 0.5 (CellFlow's tutorial value) when a context of the
    training data lacked perturbations other contexts have; on the five held-out
    glioblastoma patients and Kang CD4T, 0.1 gives the default a lower energy distance.
    A fitted model stores the value used.

    ``source="auto"`` (the default) becomes ``"control"`` when ``fit`` is given covariate keys
    (predicting a context from its own control cells), else ``"noise"``; a fitted model stores
    the resolved value.

    ``time_sampling`` is the distribution of training times ``t`` (``"uniform"``,
    ``"logit_normal"`` with ``logit_mean`` and ``logit_std``, or ``"uniform_end"``; see
    :func:`scdit.flow.get_time_sampler`). ``None`` (default) is set by ``fit``: ``"uniform"``
    for a control source fitted with held-out contexts (a context has control cells but lacks
    perturbations other contexts have), else ``"logit_normal"``
    (:func:`scdit.train.default_time_sampling`). A fitted model stores the value used.

    ``pairing`` is how training pairs each batch's cells with their source draws: ``"ot"``
    (default) re-pairs them by exact minibatch optimal transport within each (context,
    condition) group (Tong et al., 2023; Pooladian et al., 2023), ``"independent"`` keeps the
    random draws. Re-pairing within a group keeps every condition's source distribution
    exactly what sampling starts from (each group's Gaussian draws, or control cells of its
    context, only change partners) and gives the network lower-variance regression targets.
    Model files written before 2026-12-05 trained a noise source with independent pairs and a
    control source with OT pairs, and read so.

    ``compose`` is the weight of single-perturbation composition used by default when predicting
    combinations *not seen in training* (see :meth:`scdit.ScDiT.predict`); combinations seen in
    training use their learned joint condition.
    """

    source: str = "auto"
    source_noise: float | None = None
    time_sampling: str | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    solver: str = "heun"
    steps: int = 20
    compose: float = 1.0
    pairing: str = "ot"

    def __post_init__(self) -> None:
        check_field(self, "steps", integer=True, low=1)
        check_field(self, "compose", low=0.0, high=1.0,
                    hint="0 is the joint condition, 1 the composition of the members")
        check_field(self, "source_noise", low=0.0, none_ok=True,
                    hint="None lets fit choose from the design")
        if self.time_sampling not in (None, "uniform", "logit_normal", "uniform_end"):
            raise ValueError(f"FlowConfig.time_sampling = {self.time_sampling!r} is not a time "
                             "sampler; choose 'uniform', 'logit_normal', 'uniform_end', or None "
                             "(fit chooses from the design).")
        check_field(self, "logit_mean")
        check_field(self, "logit_std", low=0.0, low_open=True)
        if self.pairing not in PAIRINGS:
            raise ValueError(f"FlowConfig.pairing = {self.pairing!r} is not a pairing; choose "
                             f"from {list(PAIRINGS)} (minibatch optimal transport within each "
                             "(context, condition) group, or the random draws as they come).")


@dataclass(frozen=True)
class ScDiTConfig:
    """All configuration of a fitted model."""

    data: DataConfig
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    conditions: ConditionConfig = field(default_factory=ConditionConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "ScDiTConfig.from_dict"
                  ) -> ScDiTConfig:
        """Rebuild from :meth:`to_dict` output (tuples restored), checked before anything is built.

        ``d`` is validated against :func:`config_schema`: known sections and keys only, JSON types
        of the fields (an integer field takes no string, float or bool), sizes in a plausible
        range (:data:`SIZE_LIMITS`), no NaN.

        Parameters
        ----------
        d
            ``{"data": {...}, "tokenizer": {...}, ...}``; sections other than ``data`` may be
            left out (defaults).
        where
            What holds ``d`` (a file path), named first in error messages.

        Raises
        ------
        ValueError
            Unknown sections or keys (the message lists the valid ones), missing required keys,
            implausible sizes, options removed from scdit.
        TypeError
            ``d`` is not a mapping, or a value has the wrong JSON type.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"{where}: the configuration must be a mapping of sections "
                            f"({sorted(_SECTIONS)}), got {type(d).__name__}.")
        d = dict(d)
        if isinstance(d.get("flow"), Mapping):
            d["flow"] = _legacy_flow(d["flow"])
        for (section, key), value in LEGACY_VALUES.items():  # files older than the field
            if isinstance(d.get(section), Mapping) and key not in d[section]:
                d[section] = {**d[section], key: value}
        check_json(d, config_schema(), where, root="config")
        data = dict(d["data"])
        data["covariate_keys"] = tuple(data.get("covariate_keys", ()))
        return cls(
            data=DataConfig(**data),
            tokenizer=TokenizerConfig(**d.get("tokenizer", {})),
            conditions=ConditionConfig(**d.get("conditions", {})),
            dit=DiTConfig(**d.get("dit", {})),
            flow=FlowConfig(**_legacy_flow(d.get("flow", {}))),
            train=TrainConfig(**d.get("train", {})),
        )


_SECTIONS: dict[str, type] = {"data": DataConfig, "tokenizer": TokenizerConfig,
                              "conditions": ConditionConfig, "dit": DiTConfig,
                              "flow": FlowConfig, "train": TrainConfig}

@functools.lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    """JSON Schema of :meth:`ScDiTConfig.to_dict` output, derived from the section dataclasses
    (one property per field, no other keys; ``data`` required) and :data:`SIZE_LIMITS`."""
    props = {name: dataclass_schema(cls, SIZE_LIMITS.get(name))
             for name, cls in _SECTIONS.items()}
    props["dit"]["properties"]["backbone"]["enum"] = list(BACKBONES)
    props["dit"]["properties"]["activation"]["enum"] = list(ACTIVATIONS)
    props["flow"]["properties"]["pairing"]["enum"] = list(PAIRINGS)
    return {"type": "object", "properties": props, "required": ["data"],
            "additionalProperties": False}


#: Fields added after model files (and checkpoints) were first written, and the value that
#: gives a file without the field the behaviour of the version that wrote it.
LEGACY_VALUES: dict[tuple[str, str], Any] = {
    ("dit", "activation"): "gelu_tanh",
    ("conditions", "target_marks"): False,
}


def legacy_pairing(source: str | None) -> str:
    """:attr:`FlowConfig.pairing` of model files and checkpoints written before the field
    existed: independent draws for a (resolved) noise source, OT pairs otherwise (a control
    source, or an unresolved ``"auto"``/missing source, which is not a fitted model's and
    takes today's default)."""
    return "independent" if source == "noise" else "ot"


def _legacy_flow(flow: Mapping[str, Any]) -> dict[str, Any]:
    """Flow settings of older model files: ``center`` (removed; measured harmful) must be off."""
    flow = dict(flow)
    if flow.get("source_noise") is None:  # fit resolves None; older files: the fixed 0.5
        flow["source_noise"] = 0.5
    if flow.get("time_sampling") is None:  # fit resolves None; older files: logit-normal
        flow["time_sampling"] = "logit_normal"
    if "pairing" not in flow:
        flow["pairing"] = legacy_pairing(flow.get("source"))
    if flow.pop("center", False):
        raise ValueError("This model was saved with FlowConfig.center=True, an option removed "
                         "from scdit (it lowered accuracy on held-out patients); refit it.")
    return flow


def as_config(value: Any, cls: type, name: str) -> Any:
    """``value`` as a ``cls`` instance: ``None`` stays ``None``, a mapping gives ``cls(**value)``.

    Raises
    ------
    ValueError
        For keys that are not fields of ``cls``.
    TypeError
        For anything else than ``None``, a mapping or a ``cls``.
    """
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} field(s) {unknown} in {name}=; valid: "
                             f"{sorted(fields)}.")
        return cls(**value)
    raise TypeError(f"{name}= must be a {cls.__name__} (or a dict of its fields), got "
                    f"{type(value).__name__}.")


def merge_keyword(config: Any, field_name: str, value: Any, *, keyword: str, section: str) -> Any:
    """``config`` with ``field_name`` set from an explicitly given keyword argument.

    One source of truth: a config field left at its default takes the keyword's value; a field
    set to the same value is fine; a field set to another value is an error naming both.

    Parameters
    ----------
    config
        A config dataclass instance.
    field_name
        The field the keyword also sets.
    value
        The keyword's value (only call this when the keyword was given).
    keyword, section
        Names used in the error message (e.g. ``"seed"``, ``"train"``).

    Raises
    ------
    ValueError
        When the config sets the field to a value other than its default and the keyword's.
    """
    current = getattr(config, field_name)
    if current == value:
        return config
    default = {f.name: f.default for f in dataclasses.fields(config)}[field_name]
    if current == default:
        return dataclasses.replace(config, **{field_name: value})
    cls = type(config).__name__
    raise ValueError(
        f"{keyword}={value!r} disagrees with {section}={cls}(..., {field_name}={current!r}); give "
        f"it in one place: drop {keyword}=, or set {field_name} in the {cls}.")


#: Size presets of the DiT; ``small`` is the CPU default. Compute grows linearly with the number
#: of tokens, so each preset also sets the default token budget (``max_tokens``) of the tokenizer.
DIT_PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(hidden_size=32, depth=2, num_heads=2, max_tokens=8),
    "small": DiTConfig(hidden_size=128, depth=4, num_heads=4, max_tokens=16),
    "base": DiTConfig(hidden_size=384, depth=8, num_heads=6, max_tokens=64),
    "large": DiTConfig(hidden_size=768, depth=12, num_heads=12, max_tokens=128),
}
