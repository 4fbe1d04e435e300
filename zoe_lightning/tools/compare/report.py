"""Compare runs: a Table-5/6-style table (REL, RMSE, δ1 per domain, mean ± std over seeds where a
variant has several, best in bold, relative improvement over a reference, the constant-depth
baseline as a row) and PNG plots, from the local logs every run writes; also logged as a W&B run
(job_type ``compare``, offline when not logged in).

Runs are given as folders (a run folder, or any folder holding run folders, e.g. a sweep's output)
or selected with ``--group NAME`` among the runs under ``--root``. Each run is read from its
``summary.json`` (written by ``train``) or, when that is missing (an interrupted run), from
``config.yaml`` + ``csv/metrics.csv``. Outputs go to ``--output`` (default ``runs/compare/<group>``):
``table.md``, ``table.csv``, ``runs.csv``, ``curves.png``, ``metric_per_variant.png`` (and ``wandb/``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import UserError
from .plots import plot_curves, plot_metric_per_variant
from .runs import RunRecord, deduplicate, find_runs, load_run, runs_of_group
from .table import aggregate, baseline_rel, build_table, table_markdown, table_rows, table_title, write_csvs

__all__ = ["add_arguments", "run", "compare"]


def _reference(spec: str, runs: Sequence[RunRecord], stats: Mapping[str, Any], which: str) -> Tuple[Dict[str, float], str]:
    """``spec`` is a variant name (its mean over seeds) or a run folder (that run's metrics)."""
    if spec in stats:
        return dict(stats[spec]["mean"]), spec
    path = Path(spec)
    if path.exists():
        rec = load_run(path)
        return rec.metrics(which), rec.variant if rec.variant in stats else str(path)
    raise UserError(f"--reference {spec}: neither a variant of the compared runs ({', '.join(stats)}) nor a run folder")


def wandb_mode() -> str:
    """``WANDB_MODE`` when set (``dryrun`` counts as ``offline``), else ``online`` when logged in
    (``WANDB_API_KEY`` or a W&B entry in ``~/.netrc``) and ``offline`` otherwise."""
    import os

    mode = os.environ.get("WANDB_MODE")
    if mode:
        return "offline" if mode == "dryrun" else mode
    netrc = Path.home() / ".netrc"
    try:
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    except OSError:
        logged_in = False
    return "online" if logged_in else "offline"


def _wandb_cell(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _log_wandb(table: Mapping[str, Any], markdown: str, images: Sequence[Path], runs: Sequence[RunRecord],
               group: Optional[str], out: Path, config: Mapping[str, Any]) -> Optional[str]:
    """Log the table (``compare/table``, a ``wandb.Table`` with the constant baseline as a row) and the
    plots (``compare/<plot>``, ``wandb.Image``) as a W&B run with job_type ``compare``, online or
    offline (files under ``<out>/wandb``); nothing with ``WANDB_MODE=disabled``.  Returns where it went."""
    mode = wandb_mode()
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        print("compare: wandb is not installed; not logged to W&B")
        return None

    project = next((r.project for r in runs if r.project), "zoe-lightning")
    header = ["variant", "seeds"] + [label for _, label, _ in table["columns"]] + ["mRID_vs_ref"]
    data = [[r["variant"], r["n"]] + [_wandb_cell(r["mean"][k]) for k, _, _ in table["columns"]]
            + [_wandb_cell(r["improvement"])] for r in table_rows(table)]
    wandb_dir = Path(out) / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, group=group, job_type="compare", name=f"compare-{group or 'selection'}",
                     dir=str(Path(out).resolve()), mode=mode, config=dict(config),
                     settings=wandb.Settings(silent=True))
    try:
        run.log({"compare/table": wandb.Table(columns=header, data=data),
                 **{f"compare/{p.stem}": wandb.Image(str(p)) for p in images}})
        run.summary["compare/markdown"] = markdown
        if table.get("baseline"):
            for key, value in table["baseline"]["mean"].items():
                if not math.isnan(value):
                    run.summary[f"compare/baseline/{key.removeprefix('val/')}"] = value
        where = run.url if mode == "online" else None
    finally:
        run.finish()
    if where:
        return where
    found = sorted(wandb_dir.glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    return f"{found[-1].resolve() if found else wandb_dir.resolve()} (offline; upload with: wandb sync <that folder>)"


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
    baseline = baseline_rel(usable)
    table = build_table(stats, ref_metrics, ref_label, order, baseline=baseline)
    markdown = table_markdown(table)
    title = table_title(table, group, which)
    print(f"\n{title}\n\n{markdown}")
    out = Path(output) if output else root / "compare" / (group or "selection")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"{title}\n\n{markdown}")
    write_csvs(table, usable, which, out)
    images: List[Path] = []
    if plots:
        variants = [r["variant"] for r in table["rows"]]
        for img in (plot_curves(usable, variants, out / "curves.png", baseline=baseline),
                    plot_metric_per_variant(table, usable, which, out / "metric_per_variant.png")):
            if img is not None:
                images.append(img)
    print(f"written: {', '.join(str(p) for p in [out / 'table.md', out / 'table.csv', out / 'runs.csv', *images])}")
    wandb_run = None
    if log_wandb:
        config = {"group": group, "which": which, "reference": reference, "variants": list(stats),
                  "runs": [str(r.run_dir) for r in usable], "seeds": {v: e["seeds"] for v, e in stats.items()}}
        wandb_run = _log_wandb(table, markdown, images, usable, group, out, config)
        if wandb_run:
            print(f"W&B run: {wandb_run}")
    return {"table": table, "markdown": markdown, "output": out, "images": images, "runs": usable,
            "wandb": wandb_run}


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
    parser.add_argument("--no-wandb", action="store_true",
                        help="do not log the table and plots as a W&B run (default: logged online, or offline "
                             "under <output>/wandb when not logged in; WANDB_MODE=disabled also skips it)")


def run(args: argparse.Namespace) -> int:
    compare(args.runs, group=args.group, root=args.root, reference=args.reference, output=args.output,
            which=args.which, order=[s for s in args.order.split(",") if s] if args.order else None,
            plots=not args.no_plots, log_wandb=not args.no_wandb)
    return 0
