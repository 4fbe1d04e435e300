"""Compare runs: a Table-5/6-style table (REL, RMSE, δ1 per domain, mean ± std over seeds, best in
bold, relative improvement over a reference) and PNG plots, from the local logs every run writes.

Runs are given as folders (a run folder, or any folder holding run folders, e.g. a sweep's output)
or selected with ``--group NAME`` among the runs under ``--root``. Each run is read from its
``summary.json`` (written by ``train``) or, when that is missing (an interrupted run), from
``config.yaml`` + ``csv/metrics.csv``. Outputs go to ``--output`` (default ``runs/compare/<group>``):
``table.md``, ``table.csv``, ``runs.csv``, ``curves.png``, ``metric_per_variant.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import UserError

__all__ = [
    "add_arguments",
    "run",
    "read_csv_log",
    "validation_points",
    "best_point",
    "RunRecord",
    "load_run",
    "find_runs",
    "aggregate",
    "build_table",
    "table_markdown",
    "compare",
]

# (metric key, column label, lower is better)
TABLE_METRICS: Tuple[Tuple[str, str, bool], ...] = (("abs_rel", "REL", True), ("rmse", "RMSE", True), ("a1", "δ1", False))
MONITOR = "val/abs_rel"


# ----------------------------------------------------------------------------------------------
# Reading logs
# ----------------------------------------------------------------------------------------------


def read_csv_log(path: Path) -> List[Dict[str, float]]:
    """Rows of a Lightning CSV log, empty cells dropped, values as floats."""
    rows: List[Dict[str, float]] = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            row: Dict[str, float] = {}
            for key, value in raw.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    continue
            if row:
                rows.append(row)
    return rows


def validation_points(rows: Sequence[Mapping[str, float]]) -> List[Dict[str, float]]:
    """One dict per validation (step, epoch and every ``val/...`` value), in logging order.

    Lightning may write the values of one validation over several rows of the same step; they are
    merged. A new validation starts when a ``val/`` key already seen at that step appears again.
    """
    points: List[Dict[str, float]] = []
    for row in rows:
        vals = {k: v for k, v in row.items() if k.startswith("val/")}
        if not vals:
            continue
        step = row.get("step")
        last = points[-1] if points else None
        if last is not None and last.get("step") == step and not (set(vals) & set(last)):
            last.update(vals)
            continue
        point = dict(vals)
        if step is not None:
            point["step"] = step
        if "epoch" in row:
            point["epoch"] = row["epoch"]
        points.append(point)
    return points


def best_point(points: Sequence[Mapping[str, float]], monitor: str = MONITOR) -> Optional[Dict[str, float]]:
    """The validation with the lowest ``monitor`` (the first one on ties); None when none has it."""
    scored = [p for p in points if monitor in p and not math.isnan(p[monitor])]
    return dict(min(scored, key=lambda p: p[monitor])) if scored else None


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    run_dir: Path
    variant: str  # the experiment name
    group: str
    seed: Optional[int]
    tags: List[str]
    domains: List[str]
    final: Dict[str, float]
    best: Dict[str, float]
    finished: bool
    curves: List[Dict[str, float]] = field(default_factory=list)
    project: Optional[str] = None

    def metrics(self, which: str = "final") -> Dict[str, float]:
        return self.best if which == "best" else self.final


def _is_run_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / "csv" / "metrics.csv").is_file()


def load_run(run_dir: Path) -> RunRecord:
    """Read one run folder (summary.json, else config.yaml + csv/metrics.csv)."""
    run_dir = Path(run_dir)
    csv_path = run_dir / "csv" / "metrics.csv"
    curves = validation_points(read_csv_log(csv_path)) if csv_path.is_file() else []
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        try:
            s = json.loads(summary_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{summary_path}: not valid JSON ({exc})") from None
        final = {k: float(v) for k, v in (s.get("final") or {}).items()}
        best = {k: float(v) for k, v in (s.get("best") or {}).items()} or dict(final)
        return RunRecord(
            run_dir=run_dir, variant=str(s.get("experiment") or s.get("name") or run_dir.parent.name),
            group=str(s.get("group") or ""), seed=s.get("seed"), tags=list(s.get("tags") or []),
            domains=list(s.get("domains") or []), final=final, best=best, finished=s.get("status") == "finished",
            curves=curves, project=s.get("project"),
        )
    cfg: Dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")) or {}
    if not curves and not cfg:
        raise UserError(f"{run_dir}: not a run folder (no summary.json, no csv/metrics.csv)")
    domains = [b.get("name") for b in ((cfg.get("model") or {}).get("bins") or [])]
    last = {k: v for k, v in (curves[-1] if curves else {}).items() if k.startswith("val/")}
    best = {k: v for k, v in (best_point(curves) or last).items() if k.startswith("val/")}
    return RunRecord(
        run_dir=run_dir, variant=str(cfg.get("name") or run_dir.parent.name),
        group=str(cfg.get("group") or cfg.get("name") or ""), seed=cfg.get("seed"), tags=list(cfg.get("tags") or []),
        domains=domains, final=last, best=best, finished=False, curves=curves,
        project=(cfg.get("logger") or {}).get("project"),
    )


def find_runs(paths: Sequence[Path]) -> List[Path]:
    """Run folders among ``paths``: each path is a run folder or is searched for run folders."""
    found: List[Path] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such run folder: {path}")
        if _is_run_dir(path):
            found.append(path)
            continue
        hits = {p.parent for p in path.rglob("summary.json")}
        hits |= {p.parent.parent for p in path.rglob("csv/metrics.csv")}
        if not hits:
            raise UserError(f"{path}: holds no run (no summary.json or csv/metrics.csv below it)")
        found += sorted(hits)
    seen, unique = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def runs_of_group(root: Path, group: str) -> List[RunRecord]:
    """Finished runs under ``root`` whose summary names ``group``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root: no such folder: {root}")
    runs = [load_run(p.parent) for p in sorted(root.rglob("summary.json"))]
    runs = [r for r in runs if r.group == group and r.finished]
    if not runs:
        groups = sorted({r.group for r in (load_run(p.parent) for p in root.rglob("summary.json"))})
        raise UserError(f"--group {group}: no finished run of that group under {root}"
                        f" (groups found: {', '.join(groups) or 'none'})")
    return runs


def deduplicate(runs: Sequence[RunRecord]) -> List[RunRecord]:
    """Keep one run per (variant, seed): a finished one over an unfinished one, then the newest folder."""
    chosen: Dict[Tuple[str, Any], RunRecord] = {}
    for r in runs:
        key = (r.variant, r.seed)
        old = chosen.get(key)
        if old is None or (r.finished, str(r.run_dir.name)) >= (old.finished, str(old.run_dir.name)):
            if old is not None:
                print(f"compare: {r.variant} seed {r.seed}: using {r.run_dir}, ignoring {old.run_dir}")
            chosen[key] = r
        else:
            print(f"compare: {r.variant} seed {r.seed}: using {old.run_dir}, ignoring {r.run_dir}")
    return list(chosen.values())


# ----------------------------------------------------------------------------------------------
# Aggregation and the table
# ----------------------------------------------------------------------------------------------


def _domain_key(domain: str, metric: str) -> str:
    return f"val/{domain}/{metric}"


def aggregate(runs: Sequence[RunRecord], which: str = "final") -> Dict[str, Dict[str, Any]]:
    """variant -> {"n", "seeds", "domains", "mean": {key: m}, "std": {key: s}} over its runs.

    ``std`` is the sample standard deviation (n - 1); NaN for a single run.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        entry = out.setdefault(r.variant, {"runs": [], "domains": []})
        entry["runs"].append(r)
        for d in r.domains:
            if d not in entry["domains"]:
                entry["domains"].append(d)
    for variant, entry in out.items():
        values: Dict[str, List[float]] = {}
        for r in entry["runs"]:
            for k, v in r.metrics(which).items():
                if k.startswith("val/"):
                    values.setdefault(k, []).append(float(v))
        entry["n"] = len(entry["runs"])
        entry["seeds"] = [r.seed for r in entry["runs"]]
        entry["mean"] = {k: statistics.fmean(v) for k, v in values.items()}
        entry["std"] = {k: (statistics.stdev(v) if len(v) > 1 else math.nan) for k, v in values.items()}
    return out


def _improvement(stats: Mapping[str, float], ref: Mapping[str, float], domains: Sequence[str]) -> float:
    """mRID (percent) of ``stats`` over ``ref``, averaged over the domains both have."""
    from .evaluation.metrics import relative_improvement

    vals = []
    for d in domains:
        res = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith(f"val/{d}/")}
        rf = {k.rsplit("/", 1)[1]: v for k, v in ref.items() if k.startswith(f"val/{d}/")}
        if res and rf:
            value = relative_improvement(res, rf)["mRID"]
            if not math.isnan(value):
                vals.append(value)
    return statistics.fmean(vals) if vals else math.nan


def build_table(
    stats: Mapping[str, Mapping[str, Any]],
    reference: Optional[Mapping[str, float]] = None,
    reference_label: Optional[str] = None,
    order: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Columns, rows (cells as numbers) and the best row per column.

    Returns ``{"domains", "columns": [(key, label, lower_better)], "rows": [{"variant", "n", "mean": {key},
    "std": {key}, "improvement"}], "best": {key: variant}}``.
    """
    variants = list(stats)
    if order:
        unknown = [v for v in order if v not in stats]
        if unknown:
            raise UserError(f"--order: no runs for {', '.join(unknown)} (variants: {', '.join(variants)})")
        variants = list(order) + [v for v in variants if v not in order]
    domains: List[str] = []
    for v in variants:
        for d in stats[v]["domains"]:
            if d not in domains:
                domains.append(d)
    columns = [(_domain_key(d, m), f"{d} {label}", lower) for d in domains for m, label, lower in TABLE_METRICS]
    rows = []
    for v in variants:
        entry = stats[v]
        row = {"variant": v, "n": entry["n"], "mean": {}, "std": {}, "improvement": math.nan}
        for key, _, _ in columns:
            row["mean"][key] = entry["mean"].get(key, math.nan)
            row["std"][key] = entry["std"].get(key, math.nan)
        if reference is not None:
            row["improvement"] = _improvement(entry["mean"], reference, domains)
        row["reference"] = v == reference_label
        rows.append(row)
    best: Dict[str, str] = {}
    for key, _, lower in columns:
        cands = [(r["mean"][key], r["variant"]) for r in rows if not math.isnan(r["mean"][key])]
        if cands:
            best[key] = (min(cands) if lower else max(cands, key=lambda c: c[0]))[1]
    return {"domains": domains, "columns": columns, "rows": rows, "best": best,
            "has_reference": reference is not None, "reference": reference_label}


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_markdown(table: Mapping[str, Any], digits: int = 3) -> str:
    """The table as Markdown: mean ± std (std omitted for one run), the best of each column in bold."""
    header = ["Variant", "runs"] + [label for _, label, _ in table["columns"]]
    if table["has_reference"]:
        header.append("mRID vs ref (%)")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in table["rows"]:
        name = row["variant"] + (" (ref)" if row.get("reference") else "")
        cells = [name, str(row["n"])]
        for key, _, _ in table["columns"]:
            text = _cell(row["mean"][key], row["std"][key], digits)
            cells.append(f"**{text}**" if table["best"].get(key) == row["variant"] else text)
        if table["has_reference"]:
            imp = row["improvement"]
            cells.append("–" if math.isnan(imp) else f"{imp:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csvs(table: Mapping[str, Any], runs: Sequence[RunRecord], which: str, out: Path) -> None:
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        keys = [k for k, _, _ in table["columns"]]
        w.writerow(["variant", "runs"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")] + ["mRID_vs_ref"])
        for row in table["rows"]:
            w.writerow([row["variant"], row["n"]] + [row[s][k] for k in keys for s in ("mean", "std")]
                       + [row["improvement"]])
    keys = sorted({k for r in runs for k in r.metrics(which)})
    with open(out / "runs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "seed", "run_dir", "finished"] + keys)
        for r in runs:
            m = r.metrics(which)
            w.writerow([r.variant, r.seed, str(r.run_dir), r.finished] + [m.get(k, "") for k in keys])


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


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
        key = _domain_key(d, metric)
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
        key = _domain_key(d, metric)
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


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def _reference(spec: str, runs: Sequence[RunRecord], stats: Mapping[str, Any], which: str) -> Tuple[Dict[str, float], str]:
    """``spec`` is a variant name (its mean over seeds) or a run folder (that run's metrics)."""
    if spec in stats:
        return dict(stats[spec]["mean"]), spec
    path = Path(spec)
    if path.exists():
        rec = load_run(path)
        return rec.metrics(which), rec.variant if rec.variant in stats else str(path)
    raise UserError(f"--reference {spec}: neither a variant of the compared runs ({', '.join(stats)}) nor a run folder")


def _log_wandb(table: Mapping[str, Any], markdown: str, images: Sequence[Path], runs: Sequence[RunRecord],
               group: Optional[str]) -> bool:
    """Log the table (and plots) to W&B when online; returns whether it did."""
    import os

    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        netrc = Path.home() / ".netrc"
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
        mode = "online" if logged_in else "offline"
    if mode != "online":
        return False
    import wandb

    project = next((r.project for r in runs if r.project), "zoe-lightning")
    header = ["variant", "runs"] + [label for _, label, _ in table["columns"]] + ["mRID_vs_ref"]
    data = [[r["variant"], r["n"]] + [r["mean"][k] for k, _, _ in table["columns"]] + [r["improvement"]]
            for r in table["rows"]]
    run = wandb.init(project=project, group=group, job_type="compare", name=f"compare-{group or 'runs'}")
    run.log({"compare/table": wandb.Table(columns=header, data=data),
             **{f"compare/{p.stem}": wandb.Image(str(p)) for p in images}})
    run.summary["compare/markdown"] = markdown
    run.finish()
    return True


def compare(
    run_dirs: Sequence[Path] = (),
    group: Optional[str] = None,
    root: Path = Path("runs"),
    reference: Optional[str] = None,
    output: Optional[Path] = None,
    which: str = "final",
    order: Optional[Sequence[str]] = None,
    plots: bool = True,
    log_wandb: bool = True,
) -> Dict[str, Any]:
    """Read the runs, print the table, write table/plots to ``output``; returns the table and paths."""
    if not run_dirs and not group:
        raise UserError("compare: give run folders or --group NAME")
    runs: List[RunRecord] = [load_run(p) for p in find_runs(run_dirs)] if run_dirs else []
    if group:
        runs = [r for r in runs if r.group == group] if run_dirs else runs_of_group(root, group)
        if not runs:
            raise UserError(f"--group {group}: none of the given runs belongs to that group")
    runs = deduplicate(runs)
    usable = [r for r in runs if r.metrics(which)]
    for r in runs:
        if not r.metrics(which):
            print(f"compare: {r.run_dir}: no validation metrics yet, skipped")
        elif not r.finished:
            print(f"compare: {r.run_dir}: unfinished run, using its last logged validation")
    if not usable:
        raise UserError("compare: none of the runs has validation metrics")
    stats = aggregate(usable, which)
    ref_metrics, ref_label = (None, None)
    if reference:
        ref_metrics, ref_label = _reference(reference, usable, stats, which)
    table = build_table(stats, ref_metrics, ref_label, order)
    markdown = table_markdown(table)
    title = f"{group or 'runs'}: {which} validation metrics, mean ± std over seeds; best in bold"
    if reference:
        title += f"; mRID = mean relative improvement in REL, RMSE, log10 over {ref_label}"
    print(f"\n{title}\n\n{markdown}")
    out = Path(output) if output else root / "compare" / (group or "selection")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"{title}\n\n{markdown}")
    _write_csvs(table, usable, which, out)
    images: List[Path] = []
    if plots:
        variants = [r["variant"] for r in table["rows"]]
        for img in (plot_curves(usable, variants, out / "curves.png"),
                    plot_metric_per_variant(table, usable, which, out / "metric_per_variant.png")):
            if img is not None:
                images.append(img)
    logged = _log_wandb(table, markdown, images, usable, group) if log_wandb else False
    print(f"written: {', '.join(str(p) for p in [out / 'table.md', out / 'table.csv', out / 'runs.csv', *images])}"
          + ("; logged to W&B" if logged else ""))
    return {"table": table, "markdown": markdown, "output": out, "images": images, "runs": usable}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", type=Path, help="run folders, or folders holding run folders")
    parser.add_argument("--group", default=None, help="compare the finished runs of this group (under --root)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="where --group looks for runs (default runs)")
    parser.add_argument("--reference", default=None,
                        help="variant (experiment name) or run folder the relative improvement is computed against")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default <root>/compare/<group>)")
    parser.add_argument("--which", choices=("final", "best"), default="final",
                        help="metrics of the last validation (final, default) or of the best validation REL")
    parser.add_argument("--order", default=None, help="comma-separated variant order of the rows")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-wandb", action="store_true", help="never log the table to W&B")


def run(args: argparse.Namespace) -> int:
    compare(args.runs, group=args.group, root=args.root, reference=args.reference, output=args.output,
            which=args.which, order=[s for s in args.order.split(",") if s] if args.order else None,
            plots=not args.no_plots, log_wandb=not args.no_wandb)
    return 0
