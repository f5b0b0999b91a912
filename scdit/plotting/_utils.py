"""Figure helpers shared by the plotting functions (pyplot-free, so safe on any backend)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data import canonical_label

#: Colour of real cells / real values and of generated ones.
REAL_COLOR = "#7f7f7f"
PRED_COLOR = "#1f77b4"
#: Colours of the standard baselines (the same in every plot).
METHOD_COLORS = {"no_change": "#8c8c8c", "mean": "#2ca02c", "mean_cell_weighted": "#98df8a",
                 "additive": "#ff7f0e", "context_shift": "#bcbd22", "context_estimate": "#17becf", "linear": "#9467bd",
                 "ceiling": "#393939"}
#: Colours of overlaid baselines, in order.
BASELINE_COLORS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def order_free(labels) -> np.ndarray:
    """Condition labels in canonical form (members sorted: ``"B+A"`` → ``"A+B"``)."""
    return np.asarray([canonical_label(str(v)) for v in labels], dtype=object)


def condition_mask(labels, conditions) -> np.ndarray:
    """Cells whose condition is one of ``conditions`` (a label or a list; order-free)."""
    wanted = [conditions] if isinstance(conditions, str) else [str(c) for c in conditions]
    return np.isin(order_free(labels), order_free(wanted))


def root_figure(ax: Axes) -> Figure:
    """The top-level Figure holding ``ax`` (not a SubFigure, which cannot be saved)."""
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10
        fig = ax.figure
        while hasattr(fig, "figure") and fig.figure is not fig and fig.figure is not None:
            fig = fig.figure
        return fig


def panel_axes(n: int, ax=None, *, ncols: int = 4, panel_size: tuple[float, float] = (3.2, 3.0),
               what: str = "panels") -> tuple[Figure, list[Axes]]:
    """``n`` axes: a new grid figure (``ax=None``) or the given Axes / sequence of Axes.

    A new figure is a :class:`matplotlib.figure.Figure` not registered with pyplot: it never
    opens a window, does not accumulate in pyplot's figure list, and is shown by Jupyter when
    returned (or with ``display(fig)``).
    """
    if n < 1:
        raise ValueError(f"Nothing to plot: 0 {what}.")
    if ax is None:
        ncols = max(1, min(int(ncols), n))
        nrows = math.ceil(n / ncols)
        fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for extra in grid[n:]:
            extra.set_visible(False)
        return fig, list(grid[:n])
    axes = [ax] if isinstance(ax, Axes) else list(np.asarray(ax, dtype=object).ravel())
    if len(axes) < n or not all(isinstance(a, Axes) for a in axes):
        raise ValueError(f"Need {n} matplotlib Axes for the {what}, got {len(axes)}: pass "
                         f"ax=None for a new figure or a sequence of {n} Axes.")
    return root_figure(axes[0]), axes[:n]


def finish(fig: Figure, save, dpi: int = 150) -> Figure:
    """Save ``fig`` to ``save`` (parent folders created) when given; return it."""
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def category_colors(n: int) -> list:
    """``n`` distinguishable colours (tab10 / tab20, then a hue wheel)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def method_colors(methods) -> dict:
    """Colour per method name: standard baselines fixed, the first other method blue."""
    spare = [c for c in (PRED_COLOR, "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                         "#bcbd22") if c not in METHOD_COLORS.values()]
    out, i = {}, 0
    for m in methods:
        if m in METHOD_COLORS:
            out[m] = METHOD_COLORS[m]
        else:
            out[m] = spare[i % len(spare)]
            i += 1
    return out
