"""The PNG plots of ``compare``: validation curves per run and the metric per variant."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from .runs import RunRecord
from .table import domain_key

__all__ = ["plot_curves", "plot_metric_per_variant"]


def plot_curves(runs: Sequence[RunRecord], variants: Sequence[str], path: Path, metric: str = "abs_rel") -> Optional[Path]:
    """Validation ``metric`` against the training step, one line per run, one colour per variant
    and one panel per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains: List[str] = []
    for r in runs:
        for d in r.domains:
            if d not in domains:
                domains.append(d)
    if not domains or not any(r.curves for r in runs):
        return None
    fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, d in zip(axes[0], domains):
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
        ax.set_title(f"validation {metric} ({d})")
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metric_per_variant(table: Mapping[str, Any], runs: Sequence[RunRecord], which: str, path: Path,
                            metric: str = "abs_rel") -> Optional[Path]:
    """Bars of the mean ``metric`` per variant (error bar: std over seeds), the seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = table["domains"]
    if not domains:
        return None
    variants = [r["variant"] for r in table["rows"]]
    fig, axes = plt.subplots(1, len(domains), figsize=(max(5, 1.2 * len(variants)) * len(domains), 4.5), squeeze=False)
    for ax, d in zip(axes[0], domains):
        key = domain_key(d, metric)
        means = [r["mean"][key] for r in table["rows"]]
        stds = [0.0 if math.isnan(r["std"][key]) else r["std"][key] for r in table["rows"]]
        xs = list(range(len(variants)))
        colours = ["tab:orange" if table["best"].get(key) == v else "tab:blue" for v in variants]
        ax.bar(xs, means, yerr=stds, color=colours, alpha=0.8, capsize=4)
        for x, v in zip(xs, variants):
            ys = [r.metrics(which)[key] for r in runs if r.variant == v and key in r.metrics(which)]
            ax.scatter([x] * len(ys), ys, color="black", s=10, zorder=3)
        ax.set_xticks(xs)
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric} per variant ({d}; lower is better)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
