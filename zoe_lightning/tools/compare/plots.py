"""The PNG plots of ``compare``: validation curves per run and the metric per variant.

Each plot is built as a matplotlib ``Figure`` (object API, no pyplot state) by a ``*_figure``
function, so its axes can be inspected, and written by the matching ``plot_*`` function.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from .runs import RunRecord
from .table import BASELINE_LABEL, domain_key

__all__ = ["METRIC_LABELS", "curves_figure", "metric_figure", "plot_curves", "plot_metric_per_variant"]

# y-axis label per metric: what it is and which way is better
METRIC_LABELS = {
    "abs_rel": "REL = mean |pred - gt| / gt (lower is better)",
    "rmse": "RMSE [m] (lower is better)",
    "a1": "δ1 = share with max(pred/gt, gt/pred) < 1.25 (higher is better)",
    "log_10": "log10 error (lower is better)",
}
BASELINE_STYLE = {"color": "0.35", "linestyle": "--", "linewidth": 1.2}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _domains(runs: Sequence[RunRecord]) -> List[str]:
    out: List[str] = []
    for r in runs:
        for d in r.domains:
            if d not in out:
                out.append(d)
    return out


def curves_figure(runs: Sequence[RunRecord], variants: Sequence[str], metric: str = "abs_rel",
                  baseline: Optional[Mapping[str, float]] = None):
    """Validation ``metric`` against the training step, one line per run, one colour per variant,
    one panel per domain, the constant baseline as a dashed line; None when there is nothing to plot."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    domains = _domains(runs)
    if not domains or not any(r.curves for r in runs):
        return None
    fig = _figure(6 * len(domains), 4)
    axes = fig.subplots(1, len(domains), squeeze=False)[0]
    colours = colormaps["tab10"]
    for ax, d in zip(axes, domains):
        key = domain_key(d, metric)
        for i, v in enumerate(variants):
            first = True
            for r in runs:
                if r.variant != v:
                    continue
                pts = [(p["step"], p[key]) for p in r.curves if key in p and "step" in p]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o", ms=3, color=colours(i % 10), label=v if first else None)
                    first = False
        base = (baseline or {}).get(key)
        if base is not None and not math.isnan(base):
            ax.axhline(base, label=f"{BASELINE_LABEL} ({base:.3f})", **BASELINE_STYLE)
        ax.set_title(f"validation {metric} ({d})")
        ax.set_xlabel("training step")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def metric_figure(table: Mapping[str, Any], runs: Sequence[RunRecord], which: str, metric: str = "abs_rel"):
    """Bars of the mean ``metric`` per variant (error bar: std over seeds where n > 1), the seeds as
    dots, each bar's value written on it and the constant baseline as a dashed line.  The y axis is
    fitted to the values (it does not start at 0 when they are close), so small differences show."""
    domains = table["domains"]
    if not domains:
        return None
    variants = [r["variant"] for r in table["rows"]]
    fig = _figure(max(5, 1.2 * len(variants)) * len(domains), 4.5)
    axes = fig.subplots(1, len(domains), squeeze=False)[0]
    base_row = table.get("baseline")
    for ax, d in zip(axes, domains):
        key = domain_key(d, metric)
        means = [r["mean"][key] for r in table["rows"]]
        stds = [0.0 if math.isnan(r["std"][key]) else r["std"][key] for r in table["rows"]]
        xs = list(range(len(variants)))
        colours = ["tab:orange" if table["best"].get(key) == v else "tab:blue" for v in variants]
        ax.bar(xs, means, yerr=stds, color=colours, alpha=0.8, capsize=4)
        shown = [m for m in means if not math.isnan(m)]
        shown += [m + s for m, s in zip(means, stds) if not math.isnan(m)]
        shown += [m - s for m, s in zip(means, stds) if not math.isnan(m)]
        for x, v in zip(xs, variants):
            ys = [r.metrics(which)[key] for r in runs if r.variant == v and key in r.metrics(which)]
            ax.scatter([x] * len(ys), ys, color="black", s=10, zorder=3)
            shown += ys
        base = base_row["mean"].get(key, math.nan) if base_row else math.nan
        if not math.isnan(base):
            ax.axhline(base, label=f"{BASELINE_LABEL} ({base:.3f})", **BASELINE_STYLE)
            ax.legend(fontsize=7, loc="best")
            shown.append(base)
        if shown:
            lo, hi = min(shown), max(shown)
            pad = 0.15 * (hi - lo) if hi > lo else 0.05 * abs(hi) or 0.05
            bottom = 0.0 if lo >= 0 and lo - pad <= 0.5 * hi else lo - pad  # zoom in when values are close
            ax.set_ylim(bottom, hi + 2 * pad)
            if bottom != 0.0:
                ax.text(0.01, 0.01, f"y axis starts at {bottom:.3g}, not 0", transform=ax.transAxes, fontsize=7,
                        color="0.3", va="bottom")
        for x, m, s, row in zip(xs, means, stds, table["rows"]):
            if not math.isnan(m):
                text = f"{m:.3f}" + (f"\n± {s:.3f}" if row["n"] > 1 else "\nn=1")
                ax.annotate(text, (x, m + s), xytext=(0, 3), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7)
        ax.set_xticks(xs)
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(f"{metric} per variant ({d}, {which} validation)")
        ax.grid(axis="y", alpha=0.3)
    return fig


def _save(fig, path: Path) -> Optional[Path]:
    if fig is None:
        return None
    fig.savefig(path, dpi=100)
    return path


def plot_curves(runs: Sequence[RunRecord], variants: Sequence[str], path: Path, metric: str = "abs_rel",
                baseline: Optional[Mapping[str, float]] = None) -> Optional[Path]:
    """Write :func:`curves_figure` to ``path`` (None when there is nothing to plot)."""
    return _save(curves_figure(runs, variants, metric, baseline), path)


def plot_metric_per_variant(table: Mapping[str, Any], runs: Sequence[RunRecord], which: str, path: Path,
                            metric: str = "abs_rel") -> Optional[Path]:
    """Write :func:`metric_figure` to ``path`` (None without domains)."""
    return _save(metric_figure(table, runs, which, metric), path)
