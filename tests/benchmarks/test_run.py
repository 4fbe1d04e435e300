"""benchmarks/run.py rewrites the generated table of RESULTS.md and keeps the hand-recorded part."""

import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402

INFO = {"date_utc": "today", "cpu": "cpu", "cpu_count": 2, "cpu_capability": "AVX2", "platform": "linux",
        "device": "cpu", "torch": "2", "torch_threads": 1, "python": "3.11"}


def test_new_table_replaces_the_old_one_and_keeps_the_hand_recorded_section(tmp_path):
    (tmp_path / "RESULTS.md").write_text("# old table\n\n| 1 | old |\n\n## Other measurements\n\nby hand: 7 s\n")
    rows = [run.row(5, "metrics", 0.5, 10.0, "s", 0.05)]
    run.write_results(rows, INFO, types.SimpleNamespace(reps=1, warmup=0), tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "old table" not in text and "| 5 | metrics |" in text
    assert text.endswith("## Other measurements\n\nby hand: 7 s\n")


def test_first_run_writes_only_the_table(tmp_path):
    run.write_results([], INFO, types.SimpleNamespace(reps=1, warmup=0), tmp_path)
    assert "Other measurements" not in (tmp_path / "RESULTS.md").read_text()
    assert (tmp_path / "RESULTS.json").is_file()
