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

__all__ = ["TABLE_METRICS", "BASELINE_LABEL", "domain_key", "aggregate", "baseline_rel", "build_table", "table_title",
           "table_markdown", "table_rows", "write_csvs"]

BASELINE_LABEL = "constant baseline"  # the best constant-depth predictor (run_summary.constant_baseline)

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


def baseline_rel(runs: Sequence[RunRecord]) -> Dict[str, float]:
    """``val/<domain>/abs_rel`` -> REL of the constant-depth predictor (``baseline_rel`` of each run's
    summary.json), averaged over the runs that have it (the runs of a sweep share their data, so
    the values agree)."""
    values: Dict[str, List[float]] = {}
    for r in runs:
        for d, v in r.baseline.items():
            if not math.isnan(v):
                values.setdefault(domain_key(d, "abs_rel"), []).append(float(v))
    return {k: statistics.fmean(v) for k, v in values.items()}


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
    baseline: Optional[Mapping[str, float]] = None,
) -> Dict[str, Any]:
    """Columns, rows (cells as numbers) and the best row per column.

    Returns ``{"domains", "columns": [(key, label, lower_better)], "rows": [{"variant", "n", "mean": {key},
    "std": {key}, "improvement"}], "best": {key: variant}, "baseline": row or None}``.  ``baseline``
    (``{key: REL}``, see :func:`baseline_rel`) becomes an extra row (REL only) that never counts as best.
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
    base_row = None
    if baseline:
        base_row = {"variant": BASELINE_LABEL, "n": None, "improvement": math.nan, "reference": False,
                    "mean": {k: float(baseline.get(k, math.nan)) for k, _, _ in columns},
                    "std": {k: math.nan for k, _, _ in columns}}
    return {"domains": domains, "columns": columns, "rows": rows, "best": best, "baseline": base_row,
            "has_reference": reference is not None, "reference": reference_label}


def table_title(table: Mapping[str, Any], group: Optional[str], which: str) -> str:
    """What the table shows, with the number of seeds said as it is: "mean ± std over N seeds" only
    where a variant has several runs, "n=1" (no std) otherwise."""
    ns = sorted({int(r["n"]) for r in table["rows"]})
    if ns == [1]:
        seeds = "one run per variant (n=1, no std)"
    elif ns[0] > 1:
        seeds = (f"mean ± std over {ns[0]} seeds" if len(ns) == 1 else
                 f"mean ± std over {ns[0]}-{ns[-1]} seeds (n per row)")
    else:
        seeds = "mean ± std over seeds where n > 1; rows with n=1 are single runs (no std)"
    title = f"{group or 'runs'}: {which} validation metrics, {seeds}; best in bold"
    if table.get("baseline"):
        title += f"; '{BASELINE_LABEL}' = REL of the best constant-depth predictor (median training depth)"
    if table["has_reference"]:
        title += f"; mRID = mean relative improvement in REL, RMSE, log10 over {table['reference']}"
    return title


def table_rows(table: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The variant rows, then the constant-baseline row when there is one."""
    return list(table["rows"]) + ([table["baseline"]] if table.get("baseline") else [])


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_markdown(table: Mapping[str, Any], digits: int = 3) -> str:
    """The table as Markdown: mean ± std (std omitted for one run), the best of each column in bold."""
    header = ["Variant", "n (seeds)"] + [label for _, label, _ in table["columns"]]
    if table["has_reference"]:
        header.append("mRID vs ref (%)")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in table_rows(table):
        name = row["variant"] + (" (ref)" if row.get("reference") else "")
        cells = [name, "–" if row["n"] is None else str(row["n"])]
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
        w.writerow(["variant", "seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")] + ["mRID_vs_ref"])
        for row in table_rows(table):
            w.writerow([row["variant"], "" if row["n"] is None else row["n"]]
                       + [row[s][k] for k in keys for s in ("mean", "std")]
                       + [row["improvement"]])
    keys = sorted({k for r in runs for k in r.metrics(which)})
    with open(out / "runs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "seed", "run_dir", "finished"] + keys)
        for r in runs:
            m = r.metrics(which)
            w.writerow([r.variant, r.seed, str(r.run_dir), r.finished] + [m.get(k, "") for k in keys])
