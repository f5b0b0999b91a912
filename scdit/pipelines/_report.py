"""Benchmark reports: CSV tables, Markdown and a self-contained HTML page with the plots."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from anndata import AnnData

from ..data import canonical_label
from ..evaluate import DEFINITIONS, baseline_predictions, normalized_scores, summarize

#: Metrics shown in the report's bar chart by default.
REPORT_METRICS: tuple[str, ...] = (
    "pearson_delta",
    "pearson_delta_de",
    "pearson_delta_pert_mean",
    "mse",
    "l2_top1000",
    "direction_accuracy",
    "discrimination_l1",
    "energy_distance",
    "mmd",
)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _figures(df, baseline, ceiling, metrics, predictions, real, train, condition_key, control,
             covariate_key, max_scatter, seed) -> dict[str, tuple[str, object]]:
    """Name → (caption, Figure) of every plot the data allow (failures become captions)."""
    from .. import plotting as pl  # matplotlib only when a report is drawn

    figs: dict[str, tuple[str, object]] = {}
    shown = [m for m in metrics if m in set(df["metric"])]
    if shown:
        figs["metrics"] = ("Mean of each metric per method (bars, ± s.e.m. over conditions and "
                           f"seeds); dashed: {baseline}, dotted: {ceiling}.",
                           pl.benchmark_bars(df, shown, baseline=baseline, ceiling=ceiling))
    if not predictions or real is None or condition_key is None:
        return figs
    in_real = set(real.obs[condition_key].astype(str))
    conds = [c for c in dict.fromkeys(df["condition"]) if c in in_real][:max_scatter]
    overlay = {}
    if train is not None:
        try:
            overlay = baseline_predictions(real, condition_key, control=control, train=train,
                                           conditions=conds, covariate_key=covariate_key,
                                           baselines=(baseline,))
        except ValueError:
            overlay = {}
    for name, pred in predictions.items():
        have = {canonical_label(c, control) for c in pred.obs[condition_key].astype(str)}
        use = [c for c in conds if canonical_label(c, control) in have]
        if not use:
            continue
        figs[f"delta_{name}"] = (
            f"{name}: predicted vs real Δ (to the real control mean) per gene, "
            f"{len(use)} conditions; {baseline} baseline overlaid.",
            pl.delta_scatter(pred, real, condition_key, control, use, baseline=overlay,
                             label=name, covariate_key=covariate_key))
        figs[f"embedding_{name}"] = (
            f"{name}: real vs generated cells on the first two PCs of the real cells.",
            pl.pca_overlay(real, pred, condition_key, seed=seed))
    return figs


def _table_md(t: pd.DataFrame) -> str:
    t = t.copy()
    cols = [str(c) for c in t.columns]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in t.iterrows():
        vals = ["" if pd.isna(v) else f"{v:.4g}" for v in row.to_numpy()]
        lines.append(f"| {idx} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_report(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    baseline: str = "mean",
    ceiling: str = "ceiling",
    metrics: Sequence[str] = REPORT_METRICS,
    predictions: Mapping[str, AnnData] | None = None,
    real: AnnData | None = None,
    train: AnnData | None = None,
    condition_key: str | None = None,
    control: str | None = None,
    covariate_key: str | None = None,
    max_scatter: int = 6,
    title: str = "scdit benchmark",
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``metrics.csv``, ``summary.csv``, ``report.md`` and a self-contained ``report.html``.

    Parameters
    ----------
    df
        Tidy output of :func:`scdit.benchmark` or :func:`scdit.evaluate`.
    out_dir
        Folder to write to (created); PNG files of the plots are written next to the reports.
    baseline, ceiling
        Reference methods of the normalised scores and of the lines in the bar chart (the
        normalised table is skipped when either is missing).
    metrics
        Metrics of the bar chart.
    predictions
        Optional method name → predicted AnnData, for the per-perturbation Δ scatter and the
        real-vs-generated PCA plot (needs ``real`` and ``condition_key``).
    real, train
        Real cells (evaluated conditions + control) and training cells (for the baseline overlay).
    condition_key, control, covariate_key
        As in :func:`scdit.evaluate`.
    max_scatter
        Conditions drawn in each Δ scatter.
    title
        Report title.
    seed
        Seed of the plots' subsampling.

    Returns
    -------
    Mapping of what was written (``metrics``, ``summary``, ``markdown``, ``html``, plots) → path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.csv", "summary": out / "summary.csv",
             "markdown": out / "report.md", "html": out / "report.html"}
    df.to_csv(paths["metrics"], index=False)
    summary = summarize(df)
    summary.to_csv(paths["summary"])
    methods = set(summary.index)
    norm = (normalized_scores(df, baseline, ceiling)
            if {baseline, ceiling} <= methods else None)
    if norm is not None:
        paths["normalized"] = out / "normalized.csv"
        norm.to_csv(paths["normalized"])
    figs = _figures(df, baseline, ceiling, list(metrics), predictions, real, train,
                    condition_key, control, covariate_key, max_scatter, seed)
    images = {}
    for name, (caption, fig) in figs.items():
        data = _png(fig)
        paths[f"plot_{name}"] = out / f"{name}.png"
        paths[f"plot_{name}"].write_bytes(data)
        images[name] = (caption, data)
    settings = dict(df.attrs.get("settings", {}))
    defs = {m: DEFINITIONS.get(m, "") for m in summary.columns}
    md = [f"# {title}", "", f"Methods: {', '.join(summary.index)}.", ""]
    if "seed" in df:
        md += [f"Seeds: {sorted(df['seed'].unique().tolist())}.", ""]
    md += ["## Mean of each metric", "", _table_md(summary), ""]
    if norm is not None:
        md += [f"## Normalised scores: (model − {baseline}) / ({ceiling} − {baseline})", "",
               "0 = baseline, 1 = ceiling.", "", _table_md(norm), ""]
    md += ["## Plots", ""] + [f"![{c}]({n}.png)\n\n{c}\n" for n, (c, _) in images.items()]
    md += ["## Metric definitions", ""] + [f"- **{m}**: {d}" for m, d in defs.items()]
    md += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in settings.items()]
    paths["markdown"].write_text("\n".join(md) + "\n", encoding="utf-8")
    paths["html"].write_text(_html(title, summary, norm, images, defs, settings, baseline,
                                   ceiling), encoding="utf-8")
    return paths


def _html(title, summary, norm, images, defs, settings, baseline, ceiling) -> str:
    esc = html.escape
    fmt = {"float_format": lambda v: f"{v:.4g}", "na_rep": "", "border": 0}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}</style>",
             f"</head><body><h1>{esc(title)}</h1>",
             "<h2>Mean of each metric</h2>", summary.to_html(**fmt)]
    if norm is not None:
        parts += [f"<h2>Normalised scores: (model − {esc(baseline)}) / ({esc(ceiling)} − "
                  f"{esc(baseline)})</h2><p>0 = baseline, 1 = ceiling.</p>", norm.to_html(**fmt)]
    parts.append("<h2>Plots</h2>")
    for caption, data in images.values():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{b64}' alt='{esc(caption)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("<h2>Metric definitions</h2><ul>")
    parts += [f"<li><b>{esc(m)}</b>: {esc(d)}</li>" for m, d in defs.items()]
    parts.append("</ul><h2>Settings</h2><ul>")
    parts += [f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in settings.items()]
    parts.append("</ul></body></html>")
    return "\n".join(parts)
