"""Tables of ``evaluate`` results: the mean per method, and scores normalised to the
baseline-to-ceiling gap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._evaluate import LOWER_IS_BETTER


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per method over conditions (and covariates), wide.

    Parameters
    ----------
    df
        Output of :func:`evaluate`.

    Returns
    -------
    DataFrame indexed by method (in order of appearance), one column per metric; NaNs are
    ignored in the mean.
    """
    wide = df.groupby(["method", "metric"], sort=False)["value"].mean().unstack("metric")
    methods = list(dict.fromkeys(df["method"]))
    metrics = list(dict.fromkeys(df["metric"]))
    out = wide.reindex(index=methods, columns=metrics)
    out.columns.name = None
    out.attrs = dict(df.attrs)
    return out


def normalized_scores(
    df: pd.DataFrame, baseline: str = "mean", ceiling: str = "ceiling"
) -> pd.DataFrame:
    """Share of the baseline-to-ceiling gap a method closes, per metric.

    ``(model − baseline) / (ceiling − baseline)`` on the mean of each metric per method (over
    conditions, covariates and seeds): 0 = as good as the baseline, 1 = as good as the ceiling,
    negative = worse than the baseline. The ratio has the right orientation for lower-is-better
    metrics too (numerator and denominator change sign together); a metric is NaN where the
    ceiling is not better than the baseline in the metric's direction (see
    :data:`LOWER_IS_BETTER`), or where either is missing.

    Parameters
    ----------
    df
        Tidy output of :func:`evaluate` / :func:`benchmark` including both reference methods.
    baseline, ceiling
        Names of the reference methods in ``df["method"]``.

    Returns
    -------
    Wide DataFrame: one row per method (in order of appearance), one column per metric.
    """
    s = summarize(df)
    for ref in (baseline, ceiling):
        if ref not in s.index:
            raise ValueError(f"Method {ref!r} not in df (methods: {list(s.index)}); evaluate "
                             f"with baselines including {ref!r}.")
    b, c = s.loc[baseline], s.loc[ceiling]
    gap = c - b
    lower = np.array([m in LOWER_IS_BETTER for m in s.columns])
    better = np.where(lower, gap < 0, gap > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (s - b) / gap.where(better & (gap.abs() > 1e-12))
    out.attrs = {"baseline": baseline, "ceiling": ceiling}
    return out
