"""`zoe-lightning compare` on run folders written by the test (hand-computed means, stds, bold
and relative improvements), the CSV log reader, and the summary.json every run writes."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from zoe_lightning.errors import UserError
from zoe_lightning.tools.compare.report import compare
from zoe_lightning.tools.compare.runs import best_point, load_run, read_csv_log, validation_points
from zoe_lightning.tools.compare.table import aggregate, build_table, table_markdown

from ..conftest import TINY

CSV = """epoch,step,train/loss,val/abs_rel,val/nyu/abs_rel,val/nyu/rmse
0,9,1.0,,,
0,19,,0.30,0.30,
0,19,,,,1.5
1,39,,0.20,0.20,1.2
1,59,,0.25,0.25,1.3
"""


def make_run(root: Path, variant: str, seed: int, metrics: dict, group="g", stamp=None, finished=True,
             domains=("nyu",), baseline=None):
    run_dir = root / f"{variant}-seed{seed}" / variant / (stamp or f"2026-{seed}")
    run_dir.mkdir(parents=True)
    final = {}
    for dom, values in metrics.items():
        final.update({f"val/{dom}/{k}": v for k, v in values.items()})
    final["val/abs_rel"] = 99.0  # the headline mean must not be mistaken for a domain's value
    (run_dir / "summary.json").write_text(json.dumps({
        "experiment": variant, "group": group, "seed": seed, "tags": [variant, f"seed{seed}"],
        "domains": list(domains), "status": "finished" if finished else "running", "final": final,
        **({"baseline_rel": baseline} if baseline is not None else {}),
    }))
    (run_dir / "csv").mkdir()
    (run_dir / "csv" / "metrics.csv").write_text(CSV)
    return run_dir


def nyu(abs_rel, rmse, a1, log_10):
    return {"nyu": {"abs_rel": abs_rel, "rmse": rmse, "a1": a1, "log_10": log_10}}


@pytest.fixture
def two_variants(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "A", 1, nyu(0.10, 0.40, 0.90, 0.04))
    make_run(root, "A", 2, nyu(0.14, 0.60, 0.80, 0.06))
    make_run(root, "B", 1, nyu(0.15, 0.45, 0.88, 0.05))
    return root


def test_csv_log_reader_merges_split_rows_and_finds_the_best(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(CSV)
    rows = read_csv_log(path)
    assert rows[0] == {"epoch": 0.0, "step": 9.0, "train/loss": 1.0}
    points = validation_points(rows)
    assert [p["step"] for p in points] == [19, 39, 59]
    assert points[0] == {"val/abs_rel": 0.30, "val/nyu/abs_rel": 0.30, "val/nyu/rmse": 1.5, "step": 19, "epoch": 0}
    assert best_point(points)["step"] == 39
    assert best_point(points, "val/missing") is None


def test_mean_std_bold_and_reference(two_variants):
    runs = [load_run(p.parent) for p in sorted(two_variants.rglob("summary.json"))]
    stats = aggregate(runs)
    assert stats["A"]["n"] == 2 and stats["B"]["n"] == 1
    assert stats["A"]["mean"]["val/nyu/abs_rel"] == pytest.approx(0.12)
    assert stats["A"]["std"]["val/nyu/abs_rel"] == pytest.approx(0.04 / math.sqrt(2))  # sample std
    assert math.isnan(stats["B"]["std"]["val/nyu/abs_rel"])
    table = build_table(stats, reference=stats["A"]["mean"], reference_label="A")
    assert table["best"] == {"val/nyu/abs_rel": "A", "val/nyu/rmse": "B", "val/nyu/a1": "B"}
    # B over A: REL (0.12-0.15)/0.12 = -25 %, RMSE (0.5-0.45)/0.5 = +10 %, log10 0 % -> mean -5 %
    assert [r["improvement"] for r in table["rows"]] == [pytest.approx(0.0), pytest.approx(-5.0)]
    lines = table_markdown(table).splitlines()
    assert lines[0] == "| Variant | n (seeds) | nyu REL | nyu RMSE | nyu δ1 | mRID vs ref (%) |"
    assert lines[2] == "| A (ref) | 2 | **0.120 ± 0.028** | 0.500 ± 0.141 | 0.850 ± 0.071 | +0.0 |"
    assert lines[3] == "| B | 1 | 0.150 | **0.450** | **0.880** | -5.0 |"


def test_two_domains_columns_and_improvement_averaged_over_domains(tmp_path):
    root = tmp_path / "runs"
    both = ("nyu", "kitti")
    make_run(root, "C", 1, {"nyu": {"abs_rel": 0.1, "rmse": 0.4, "a1": 0.9, "log_10": 0.04},
                            "kitti": {"abs_rel": 0.2, "rmse": 4.0, "a1": 0.7, "log_10": 0.08}}, domains=both)
    make_run(root, "D", 1, {"nyu": {"abs_rel": 0.05, "rmse": 0.4, "a1": 0.8, "log_10": 0.04},
                            "kitti": {"abs_rel": 0.2, "rmse": 3.0, "a1": 0.75, "log_10": 0.08}}, domains=both)
    out = compare([root], reference="C", output=tmp_path / "out", log_wandb=False, plots=False)
    table = out["table"]
    assert [label for _, label, _ in table["columns"]] == [
        "nyu REL", "nyu RMSE", "nyu δ1", "kitti REL", "kitti RMSE", "kitti δ1"]
    # nyu: (50 + 0 + 0) / 3; kitti: (0 + 25 + 0) / 3; mean of the two = 12.5 %
    assert table["rows"][1]["improvement"] == pytest.approx(12.5)
    assert table["best"]["val/nyu/a1"] == "C" and table["best"]["val/kitti/a1"] == "D"
    assert table["best"]["val/nyu/rmse"] in ("C", "D")  # tie
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| D | 1 | **0.050** | " in md and "+12.5 |" in md


def test_group_selection_order_outputs_and_plots(tmp_path, two_variants, capsys):
    make_run(two_variants, "Z", 1, nyu(0.5, 1, 0.5, 0.1), group="other")
    make_run(two_variants, "Y", 1, nyu(0.5, 1, 0.5, 0.1), finished=False)  # unfinished: not in --group
    out = compare(group="g", root=two_variants, reference="A", order=["B"], log_wandb=False)
    assert [r["variant"] for r in out["table"]["rows"]] == ["B", "A"]
    assert out["output"] == two_variants / "compare" / "g"
    for name in ("table.md", "table.csv", "runs.csv", "curves.png", "metric_per_variant.png"):
        path = out["output"] / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (out["output"] / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "**0.120 ± 0.028**" in capsys.readouterr().out
    runs_csv = (out["output"] / "runs.csv").read_text().splitlines()
    assert len(runs_csv) == 4  # header + 3 runs of group g
    with pytest.raises(UserError, match="groups found: g, other"):
        compare(group="nope", root=two_variants, log_wandb=False)


def test_unfinished_run_without_summary_uses_its_last_validation(tmp_path):
    run_dir = tmp_path / "E" / "2026"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text(CSV)
    (run_dir / "config.yaml").write_text("name: E\ngroup: g\nseed: 5\nmodel:\n  bins:\n    - {name: nyu}\n")
    rec = load_run(run_dir)
    assert (rec.variant, rec.group, rec.seed, rec.domains, rec.finished) == ("E", "g", 5, ["nyu"], False)
    assert rec.final["val/nyu/abs_rel"] == 0.25 and rec.best["val/nyu/abs_rel"] == 0.20
    assert len(rec.curves) == 3


def test_unfinished_single_domain_run_picks_its_best_by_the_domain_key(tmp_path):
    """A one-domain run logs val/nyu/* only (no val/abs_rel mean): its best is the lowest val/nyu/abs_rel."""
    run_dir = tmp_path / "F" / "2026"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text(
        "epoch,step,val/nyu/abs_rel,val/nyu/rmse\n0,19,0.30,1.5\n1,39,0.20,1.2\n1,59,0.25,1.3\n")
    (run_dir / "config.yaml").write_text("name: F\nstage: metric\nmodel:\n  bins:\n    - {name: nyu}\n")
    rec = load_run(run_dir)
    assert rec.best == {"val/nyu/abs_rel": 0.20, "val/nyu/rmse": 1.2}
    assert rec.final["val/nyu/abs_rel"] == 0.25


def test_duplicate_seed_keeps_the_newest_run(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "x", "A", 1, nyu(0.3, 1, 0.5, 0.1), stamp="20260101-000000")
    make_run(root / "y", "A", 1, nyu(0.1, 1, 0.5, 0.1), stamp="20260102-000000")
    out = compare([root], output=tmp_path / "o", log_wandb=False, plots=False)
    assert out["table"]["rows"][0]["n"] == 1
    assert out["table"]["rows"][0]["mean"]["val/nyu/abs_rel"] == pytest.approx(0.1)


def test_best_metrics_with_which_best(tmp_path):
    run_dir = tmp_path / "E" / "2026"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text(CSV)
    (run_dir / "config.yaml").write_text("name: E\nmodel:\n  bins:\n    - {name: nyu}\n")
    out = compare([run_dir], which="best", output=tmp_path / "o", log_wandb=False, plots=False)
    assert out["table"]["rows"][0]["mean"]["val/nyu/rmse"] == pytest.approx(1.2)


def test_cli_errors_are_one_line(tmp_path, two_variants, capsys):
    from zoe_lightning.cli import main

    assert main(["compare", str(two_variants), "--reference", "nope", "--no-wandb", "--no-plots",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoe-lightning: error: --reference nope") and "\n" not in err
    assert main(["compare", str(tmp_path / "missing"), "--no-wandb"]) == 2
    assert main(["compare", "--no-wandb"]) == 2
    assert main(["compare", str(two_variants), "--reference", "B", "--no-wandb", "--no-plots",
                 "--output", str(tmp_path / "o2")]) == 0


def test_train_writes_summary_json(tmp_path):
    from zoe_lightning import load_config
    from zoe_lightning.run_summary import write_summary

    cfg = load_config("base", TINY + ["seed=11", "group=grp", "tags=[t]"])
    run_dir = tmp_path / "run"
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text(CSV)
    (run_dir / "config.yaml").write_text("x: 1\n")
    trainer = SimpleNamespace(global_step=59)
    ckpt = SimpleNamespace(best_model_path="b.ckpt", last_model_path="l.ckpt")
    final = {"val/abs_rel": 0.25, "val/nyu/abs_rel": 0.25}
    write_summary(cfg, trainer, run_dir, final, {"nyu": 0.5}, ckpt, None)
    s = json.loads((run_dir / "summary.json").read_text())
    assert (s["experiment"], s["group"], s["seed"], s["tags"], s["domains"]) == ("base", "grp", 11, ["t"], ["nyu"])
    assert s["final"] == final and s["status"] == "finished" and s["best_step"] == 39
    assert s["best"] == {"val/abs_rel": 0.20, "val/nyu/abs_rel": 0.20, "val/nyu/rmse": 1.2}
    assert s["checkpoints"] == {"best": "b.ckpt", "last": "l.ckpt"} and s["run_dir"] == str(run_dir)
    rec = load_run(run_dir)
    assert rec.variant == "base" and rec.finished and rec.best["val/nyu/rmse"] == 1.2


# ----------------------------------------------------------------------------- baseline, seeds, plots, W&B
@pytest.fixture
def with_baseline(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "A", 1, nyu(0.30, 0.40, 0.90, 0.04), baseline={"nyu": 0.50})
    make_run(root, "A", 2, nyu(0.32, 0.60, 0.80, 0.06), baseline={"nyu": 0.50})
    make_run(root, "B", 1, nyu(0.31, 0.45, 0.88, 0.05), baseline={"nyu": 0.53})
    return root


def test_constant_baseline_is_a_row_of_the_table(with_baseline, tmp_path):
    out = compare([with_baseline], output=tmp_path / "o", log_wandb=False, plots=False)
    table = out["table"]
    # the runs' baseline_rel averaged: (0.50 + 0.50 + 0.53) / 3
    assert table["baseline"]["mean"]["val/nyu/abs_rel"] == pytest.approx(0.51)
    assert math.isnan(table["baseline"]["mean"]["val/nyu/rmse"])
    assert table["best"]["val/nyu/abs_rel"] == "A"  # the baseline never counts as best
    lines = out["markdown"].splitlines()
    assert lines[-1] == "| constant baseline | – | 0.510 | – | – |"
    csv_rows = (tmp_path / "o" / "table.csv").read_text().splitlines()
    assert csv_rows[-1].startswith("constant baseline,,0.51,nan,nan")
    assert "constant baseline" in (tmp_path / "o" / "table.md").read_text().splitlines()[0]
    # runs without baseline_rel (older summaries): no row
    assert compare([tmp_path / "runs" / "A-seed1"], output=tmp_path / "o2", log_wandb=False,
                   plots=False)["table"]["baseline"] is not None
    bare = make_run(tmp_path / "bare", "C", 1, nyu(0.3, 0.4, 0.9, 0.04))
    assert compare([bare], output=tmp_path / "o3", log_wandb=False, plots=False)["table"]["baseline"] is None


def test_title_counts_seeds_honestly(tmp_path, with_baseline):
    from zoe_lightning.tools.compare.table import table_title

    def title_of(*variants_seeds):
        root = tmp_path / "t" / str(len(list((tmp_path / "t").glob("*"))) if (tmp_path / "t").exists() else 0)
        for v, seed in variants_seeds:
            make_run(root, v, seed, nyu(0.3 + seed / 100, 0.4, 0.9, 0.04))
        runs = [load_run(p.parent) for p in sorted(root.rglob("summary.json"))]
        return table_title(build_table(aggregate(runs)), "g", "final")

    single = title_of(("A", 1), ("B", 1))
    assert "n=1" in single and "±" not in single
    two = title_of(("A", 1), ("A", 2), ("B", 1), ("B", 2))
    assert "mean ± std over 2 seeds" in two
    mixed = title_of(("A", 1), ("A", 2), ("B", 1))
    assert "n=1" in mixed and "n > 1" in mixed


def _axes_of(fig):
    fig.canvas.draw()  # ticks and limits are final after a draw
    return fig.axes


def test_plots_have_labels_integer_steps_baseline_and_a_fitted_axis(with_baseline):
    from zoe_lightning.tools.compare.plots import curves_figure, metric_figure
    from zoe_lightning.tools.compare.runs import RunRecord
    from zoe_lightning.tools.compare.table import baseline_rel

    runs = [load_run(p.parent) for p in sorted(with_baseline.rglob("summary.json"))]
    stats = aggregate(runs)
    base = baseline_rel(runs)
    table = build_table(stats, baseline=base)
    (ax,) = _axes_of(metric_figure(table, runs, "final"))
    assert "REL" in ax.get_ylabel() and "lower is better" in ax.get_ylabel()
    lo, hi = ax.get_ylim()
    assert 0.2 < lo < 0.30 and hi > 0.51  # values 0.30-0.32 and baseline 0.51: not from 0
    lines = [ln for ln in ax.get_lines() if "constant baseline" in str(ln.get_label())]
    assert len(lines) == 1 and list(lines[0].get_ydata()) == pytest.approx([0.51, 0.51])
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("0.310") and "n=1" in t for t in texts)  # B: one seed
    assert any(t.startswith("0.310") and "± 0.014" in t for t in texts)  # A: mean 0.31, std 0.0141

    # far-apart values keep the axis at 0
    far = build_table({"A": {**stats["A"], "mean": {"val/nyu/abs_rel": 0.05}}, "B": stats["B"]})
    (ax,) = _axes_of(metric_figure(far, [], "final"))
    assert ax.get_ylim()[0] == 0.0

    # curves over a few steps: integer step ticks, labelled y axis, the baseline line
    curve = [{"step": s, "val/nyu/abs_rel": 0.5 - 0.05 * s} for s in (1, 2, 3)]
    rec = RunRecord(run_dir=Path("r"), variant="A", group="g", seed=1, tags=[], domains=["nyu"], final={}, best={},
                    finished=True, curves=curve)
    (ax,) = _axes_of(curves_figure([rec], ["A"], baseline=base))
    assert ax.get_xlabel() == "training step" and "REL" in ax.get_ylabel()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    assert any("constant baseline" in str(ln.get_label()) for ln in ax.get_lines())


def test_compare_logs_table_and_plots_to_an_offline_wandb_run(with_baseline, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from .wandb_records import history_values, read_run

    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = compare([with_baseline], group="g", output=tmp_path / "off", log_wandb=True)
    assert out["wandb"] is None and not (tmp_path / "off" / "wandb").exists()

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = compare([with_baseline], group="g", output=tmp_path / "on", log_wandb=True)
    import wandb

    wandb.teardown()  # the run file is complete once W&B's service has stopped (as at the end of the CLI)
    (run_dir,) = (tmp_path / "on" / "wandb").glob("offline-run-*")
    assert str(run_dir.resolve()) in out["wandb"]
    run = read_run(run_dir)
    assert run["run"].job_type == "compare" and run["run"].run_group == "g"
    assert run["run"].display_name == "compare-g"
    config = {item.key: json.loads(item.value_json) for item in run["run"].config.update}
    assert config["group"] == "g" and config["variants"] == ["A", "B"] and config["seeds"] == {"A": [1, 2], "B": [1]}
    (path,) = history_values(run, "compare/table/path")
    table = json.loads((run["files"] / path).read_text())
    assert table["columns"][:3] == ["variant", "seeds", "nyu REL"]
    rows = {r[0]: r for r in table["data"]}
    assert rows["constant baseline"][1] is None and rows["constant baseline"][2] == pytest.approx(0.51)
    assert rows["A"][1] == 2 and rows["A"][2] == pytest.approx(0.31)
    for name in ("curves", "metric_per_variant"):
        (img,) = history_values(run, f"compare/{name}/path")
        assert (run["files"] / img).read_bytes()[:4] == b"\x89PNG"
    assert run["summary"]["compare/baseline/nyu/abs_rel"] == pytest.approx(0.51)
