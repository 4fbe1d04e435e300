"""Reading runs for ``compare``: a run folder's ``summary.json`` or, for an interrupted run, its
``config.yaml`` + Lightning CSV log (validation points, the best one), and finding run folders."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import UserError
from ...metric_keys import monitor_key

__all__ = ["MONITOR", "read_csv_log", "validation_points", "best_point", "RunRecord", "load_run", "find_runs",
           "runs_of_group", "deduplicate"]

MONITOR = "val/abs_rel"  # several domains; one domain: val/<domain>/abs_rel (metric_keys.monitor_key)

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
    baseline: Dict[str, float] = field(default_factory=dict)  # domain -> REL of the constant predictor

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
            baseline={str(k): float(v) for k, v in (s.get("baseline_rel") or {}).items()},
        )
    cfg: Dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")) or {}
    if not curves and not cfg:
        raise UserError(f"{run_dir}: not a run folder (no summary.json, no csv/metrics.csv)")
    domains = [b.get("name") for b in ((cfg.get("model") or {}).get("bins") or [])]
    stage = str(cfg.get("stage") or "metric")
    monitor = monitor_key(stage, domains) if domains or stage == "relative" else MONITOR
    last = {k: v for k, v in (curves[-1] if curves else {}).items() if k.startswith("val/")}
    best = {k: v for k, v in (best_point(curves, monitor) or last).items() if k.startswith("val/")}
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
