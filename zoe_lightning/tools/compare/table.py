"""The comparison table: mean ± std over seeds per variant, the best row per column, the relative
improvement (mRID) over a reference; as Markdown and as CSV files."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import UserError
from .runs import RunRecord

__all__ = ["TABLE_METRICS", "domain_key", "aggregate", "build_table", "table_markdown", "write_csvs"]

# (metric key, column label, lower is better)
TABLE_METRICS: Tuple[Tuple[str, str, bool], ...] = (("abs_rel", "REL", True), ("rmse", "RMSE", True), ("a1", "δ1", False))


def domain_key(domain: str, metric: str) -> str:
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
    from ...evaluation.metrics import relative_improvement

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
    columns = [(domain_key(d, m), f"{d} {label}", lower) for d in domains for m, label, lower in TABLE_METRICS]
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


def write_csvs(table: Mapping[str, Any], runs: Sequence[RunRecord], which: str, out: Path) -> None:
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
