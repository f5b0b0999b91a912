"""Empirical-Bayes shrinkage of perturbation effects estimated from a few cells.

A perturbation's training effect ``d = mean(perturbed) - mean(control)`` is a noisy estimate
of its true effect ``δ``: each coordinate carries sampling noise of variance ``s² = var/n``
(perturbed) plus that of the control mean. Effects of different perturbations in one context
share structure (the same gene programmes respond to many perturbations), so a Gaussian prior
``δ ~ N(0, Σ)`` with ``Σ`` estimated from *all* training effects of the context,

    Σ = (1/L) Σ_l d_l d_lᵀ − diag(mean_l s²_l),   (projected onto the PSD cone)

gives the posterior mean ``E[δ | d] = Σ (Σ + diag(s²))⁻¹ d``: coordinates and directions that
no training perturbation moves are shrunk towards zero, those that many move are kept (see the
held-out Norman doubles benchmark, docs/results.md); with fewer than ~10 effects the estimate
of ``Σ`` is too poor to help, so callers require a minimum number of effects.
"""

from __future__ import annotations

import numpy as np

MIN_EFFECTS = 10  # effects needed before the prior is used by default (see module docstring)
NOISE_FLOOR = 1e-2  # noise variances are floored at this fraction of their mean
# the prior is a dense (D, D) eigendecomposition: ~1 s at D = 2,000, ~17 s at 5,000 on 2 CPU
# cores, cubic beyond; the default (shrink=None) skips it for larger token spaces
MAX_DIM = 5000
#: Limited translation, in standard errors, of the shrunk effects that set a *seen*
#: perturbation's mean (see :func:`posterior_effect`): its raw training mean is unbiased for
#: its own mean, and the limit bounds the bias the prior adds. Measured on held-out cells of
#: the Norman and Papalexi screens (docs/results.md, seen perturbations). The additive estimate
#: of unseen combinations keeps the plain posterior mean: there the members' means predict a
#: different quantity, and the full shrinkage was better on the held-out Norman doubles.
SEEN_LIMIT = 0.5


def group_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and squared standard error of the mean of the rows of ``x`` ``(n, D)``.

    Returns ``(mean (D,), se2 (D,) or None)``; ``se2`` is ``None`` for fewer than two rows.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    if len(x) < 2:
        return mean, None
    return mean, x.var(0, ddof=1) / len(x)


def effect_prior(effects: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Prior covariance ``Σ`` ``(D, D)`` of true effects from observed effects and their noise.

    Parameters
    ----------
    effects
        Observed effects ``(L, D)``, one row per perturbation.
    noise
        Their per-coordinate noise variances ``(L, D)`` (``se2`` of the perturbed mean plus
        that of the control mean).

    Returns
    -------
    The method-of-moments estimate ``EᵀE / L − diag(mean noise)``, with negative eigenvalues
    set to zero.
    """
    effects = np.asarray(effects, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if effects.ndim != 2 or effects.shape != noise.shape or len(effects) == 0:
        raise ValueError(f"effects and noise must both be (L, D) with L >= 1; got "
                         f"{effects.shape} and {noise.shape}.")
    sigma = effects.T @ effects / len(effects) - np.diag(noise.mean(0))
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.clip(w, 0.0, None)) @ v.T


def posterior_effect(effect: np.ndarray, noise: np.ndarray, sigma: np.ndarray,
                     limit: float | None = None) -> np.ndarray:
    """Posterior mean ``Σ (Σ + diag(noise))⁻¹ effect`` of a true effect given its estimate.

    The noise variances are floored at ``NOISE_FLOOR`` × their mean: a coordinate that is
    (almost) constant in the few cells of a group, e.g. a gene detected in one or two cells,
    has a sampling variance estimate near zero that would otherwise be trusted blindly (and
    makes ``Σ + diag(noise)`` ill-conditioned when ``Σ`` has low rank).

    ``limit``: limited translation (Efron & Morris 1972): no coordinate moves more than
    ``limit`` standard errors from the observed effect. A Gaussian prior fitted to all effects
    pulls a perturbation's large, idiosyncratic changes (often its strongest DE genes) towards
    the shared programmes; the limit keeps most of the shrinkage's gain over many small
    coordinates while bounding that loss.
    """
    if limit is not None and not float(limit) >= 0:
        raise ValueError(f"limit must be a non-negative number of standard errors or None, "
                         f"got {limit!r}.")
    effect = np.asarray(effect, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    floor = NOISE_FLOOR * max(float(noise.mean()), 1e-12) if noise.size else 0.0
    noise = np.maximum(noise, floor)
    post = sigma @ np.linalg.solve(sigma + np.diag(noise), effect)
    if limit is None:
        return post
    bound = float(limit) * np.sqrt(noise)
    return effect + np.clip(post - effect, -bound, bound)
