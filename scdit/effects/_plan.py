"""Which estimator sets a prediction's mean, per context: the effect plan.

:class:`EffectConfig` is what a user chooses (``predict(effects=...)``); :class:`EffectPlan`
turns it into one :class:`~scdit.effects.Estimate` per requested context, or ``None`` where the
generator alone sets the mean.

Rules of ``mode="auto"`` (the default), per label over all requested contexts:

* a label seen in training with reference cells in every requested context: its training
  mean over the reference cells (shrunk where the context has enough effects), rather than the
  generator's less precise mean;
* an unseen combination whose members and control all have reference cells in every
  context: the additive estimate, shrunk where the context has enough effects;
* a label never seen in any requested context but seen, with control, in at least
  :data:`MIN_CONTEXTS` others: the held-out-context estimate;
* a perturbation the model cannot place (never seen and without perturbation features, see
  :meth:`EffectPlan.typical`): the average of the perturbations seen in the context.

``mode="always"`` applies the first estimator that can (seen mean, additive, held-out
context with ≥ 2 contexts) and raises where none can; ``mode="none"`` is the generator alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._estimators import MIN_CONTEXTS, Estimate, HeldOutContext, additive, seen_mean, typical
from ._shrinkage import MAX_DIM, MIN_EFFECTS
from ._table import Context, EffectTable

MODES = ("auto", "always", "none")


@dataclass(frozen=True)
class EffectConfig:
    """How effect estimates set the mean of predicted cells (``predict(effects=...)``).

    Attributes
    ----------
    mode
        ``"auto"``: estimators where the generator alone is the weaker predictor (seen
        perturbations, unseen combinations, held-out contexts; see :mod:`scdit.effects`);
        ``"always"``: an estimator for every label (error where none applies); ``"none"``: the
        generator alone.
    shrink
        Use empirical-Bayes shrunk training effects in the seen-mean and additive estimates
        (a seen perturbation's with limited translation: at most
        :data:`~scdit.effects.SEEN_LIMIT` standard errors from its raw training effect).
        ``None``: where the context has at least :data:`~scdit.effects.MIN_EFFECTS` effects
        with standard errors and the coordinates are few enough for the dense prior;
        ``True``: wherever a prior can be estimated (error otherwise); ``False``: raw means.
    target_prior
        For unseen perturbations known through features whose target is a measured gene,
        scale the target gene by the typical on-target change seen in training. ``None``
        (default): on unless ``mode="none"`` (the generator alone is the generator, nothing
        added).
    """

    mode: str = "auto"
    shrink: bool | None = None
    target_prior: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"EffectConfig.mode must be one of {MODES}, got {self.mode!r}.")
        if self.shrink not in (None, True, False):
            raise ValueError(f"EffectConfig.shrink must be None, True or False, got "
                             f"{self.shrink!r}.")
        if self.shrink and self.mode == "none":
            raise ValueError("shrink=True shrinks the effects that set the mean; it needs "
                             "mode='auto' or 'always', not 'none'.")
        if self.target_prior not in (None, True, False):
            raise TypeError(f"EffectConfig.target_prior must be None, True or False, got "
                            f"{self.target_prior!r}.")

    @property
    def use_target_prior(self) -> bool:
        """Whether the target prior is applied (``target_prior``, or by default unless the
        generator alone was asked for)."""
        return self.mode != "none" if self.target_prior is None else self.target_prior

    @classmethod
    def coerce(cls, effects: str | EffectConfig | None) -> EffectConfig:
        """An :class:`EffectConfig` from ``predict``'s ``effects`` argument."""
        if isinstance(effects, cls):
            return effects
        if effects is None:
            return cls(mode="none")
        if isinstance(effects, str):
            return cls(mode=effects)
        raise TypeError(f"effects must be 'auto', 'always', 'none' or an EffectConfig, got "
                        f"{effects!r}.")


class EffectPlan:
    """Resolves an :class:`EffectConfig` into per-context estimates over one table.

    Parameters
    ----------
    table
        The effect table the estimates come from.
    seen_labels
        Canonical labels of every condition seen in training (to tell seen from unseen
        combinations).
    describe
        ``ctx -> str`` for error messages (e.g. ``" in context {'cell_type': 'B'}"``).

    Attributes
    ----------
    min_effects
        Effects (with standard errors) a context needs before ``shrink=None`` shrinks.
    max_dim
        Most coordinates for which ``shrink=None`` computes the dense prior.
    """

    min_effects: int = MIN_EFFECTS
    max_dim: int = MAX_DIM

    def __init__(self, table: EffectTable, seen_labels: Sequence[str],
                 describe: Callable[[Context], str] | None = None):
        self.table = table
        self.seen = set(seen_labels)
        self.context = HeldOutContext(table)
        self._describe = describe or (lambda ctx: f" in context {ctx}" if ctx else "")

    def _held_out(self, label: str, ctx: Context, means: Mapping) -> bool:
        t = self.table
        return (not t.has(label, ctx) and self.context.available(label, ctx,
                                                                 min_contexts=MIN_CONTEXTS)
                and (ctx in means or t.has(t.control, ctx)))

    def applies(self, label: str, members: tuple[str, ...], contexts: list[Context],
                source_means: Mapping[Context, np.ndarray], has_covariates: bool) -> bool:
        """Whether ``mode="auto"`` uses an estimator for ``label`` in ``contexts``."""
        if not contexts:
            return False
        if has_covariates and all(self._held_out(label, c, source_means) for c in contexts):
            return True
        t = self.table
        if label in self.seen and all(t.has(label, c) for c in contexts):
            return True  # a seen perturbation: its (shrunk) training mean
        if len(members) < 2 or label in self.seen:
            return False
        return all(t.has(m, c) for c in contexts for m in (*members, t.control))

    def shrink_in(self, ctx: Context, shrink: bool | None) -> bool:
        """Whether seen-mean / additive estimates in ``ctx`` use shrunk effects."""
        if shrink is False:
            return False
        t = self.table
        dim = len(t.units) if t.units is not None else None
        if shrink is None and dim is not None and dim > self.max_dim:
            return False  # the dense prior would be too slow; shrink=True forces it
        prior = t.prior(ctx)
        if prior is not None and (shrink or prior[1] >= self.min_effects):
            return True
        if shrink:
            raise ValueError(
                f"shrink=True needs at least two perturbations with two or more training "
                f"cells, and control cells,{self._describe(ctx)} to estimate the prior; use "
                "EffectConfig(shrink=None).")
        return False

    def resolve(self, label: str, members: tuple[str, ...], contexts: list[Context],
                config: EffectConfig, source_means: Mapping[Context, np.ndarray],
                has_covariates: bool) -> dict[Context, Estimate] | None:
        """Per requested context, the estimate that sets the mean of a label.

        Parameters
        ----------
        label, members
            Canonical label and its members (``(label,)`` for a single perturbation).
        contexts
            The requested contexts.
        config
            What the user asked for.
        source_means
            Per context, the control mean of the cells to transport (used by the
            held-out-context estimate instead of the stored control cells').
        has_covariates
            Whether the model has covariates (held-out contexts exist only then).

        Returns
        -------
        ``{context: Estimate}``, or ``None`` where the generator alone sets the mean.

        Raises
        ------
        ValueError
            With ``mode="always"`` where no estimator applies, or ``shrink=True`` where no
            prior can be estimated.
        """
        if not contexts or config.mode == "none" or (config.mode == "auto" and not self.applies(
                label, members, contexts, source_means, has_covariates)):
            return None
        out: dict[Context, Estimate] = {}
        for ctx in contexts:
            if self.table.has(label, ctx):
                out[ctx] = seen_mean(self.table, label, ctx,
                                     shrink=self.shrink_in(ctx, config.shrink))
                continue
            est = additive(self.table, members, ctx, shrink=False)
            if est is None:
                est = self.context.estimate(label, ctx, source_means.get(ctx))
                if est is None:
                    missing = [m for m in (*members, self.table.control)
                               if not self.table.has(m, ctx)] if len(members) > 1 else [label]
                    raise ValueError(
                        f"An effect estimate needs training cells of {missing}"
                        f"{self._describe(ctx)} (a seen perturbation uses its own training "
                        f"mean, an unseen combination its members', a held-out context its "
                        f"effect in ≥ 2 other contexts); {label!r} has none. Use "
                        "effects='none' (the generator alone).")
            elif self.shrink_in(ctx, config.shrink):
                est = additive(self.table, members, ctx, shrink=True)
            out[ctx] = est
        return out

    def typical(self, contexts: list[Context], config: EffectConfig
                ) -> dict[Context, Estimate] | None:
        """Per requested context, the :func:`~scdit.effects.typical` estimate: the mean of a
        perturbation the model cannot place (``None`` with ``mode="none"``, the generator
        alone).

        Raises
        ------
        ValueError
            Where a requested context has no control cells, or no perturbation was seen.
        """
        if not contexts or config.mode == "none":
            return None
        out: dict[Context, Estimate] = {}
        for ctx in contexts:
            est = typical(self.table, self.seen, ctx)
            if est is None:
                raise ValueError(
                    f"A typical perturbation's mean needs control cells{self._describe(ctx)} "
                    "and perturbed cells in training; there are none. Pass covariates= or "
                    "source= of a context with both, or use effects='none' (the generator "
                    "alone).")
            out[ctx] = est
        return out
