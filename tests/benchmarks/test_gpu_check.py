"""The prepared GPU check (benchmarks/gpu_check.py): its verdicts on hand-made inputs, its refusals,
and a whole dry run on the CPU, so that the script is known to work before a GPU runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_loss_verdict_passes_a_falling_loss_that_matches_the_cpu():
    device = [2.0, 1.9, 1.8, 1.5, 1.2, 1.0]
    cpu = [2.01, 1.91, 1.79]
    v = gpu_check.loss_verdict(device, cpu, compare_steps=3, rtol=0.05)
    # k = max(1, min(5, 6 // 3)) = 2: first mean (2.0 + 1.9) / 2, last mean (1.2 + 1.0) / 2
    assert v["first_mean"] == pytest.approx(1.95) and v["last_mean"] == pytest.approx(1.1)
    assert v["falls"] and v["agree"] and v["passed"]
    assert v["relative_differences"][0] == pytest.approx(0.01 / 2.01)


@pytest.mark.parametrize("device,cpu,falls,agree", [
    ([1.0, 1.1, 1.2, 1.3, 1.4, 1.5], [1.0, 1.1, 1.2], False, True),  # rising loss
    ([2.0, 1.9, 1.8, 1.5, 1.2, 1.0], [2.0, 1.5, 1.8], True, False),  # step 2 off by 27 %
    ([2.0, 1.0], [2.0, 1.0, 0.5], True, False),  # fewer device steps than compared steps
])
def test_loss_verdict_fails_what_it_should(device, cpu, falls, agree):
    v = gpu_check.loss_verdict(device, cpu, compare_steps=3, rtol=0.05)
    assert v["falls"] is falls and v["agree"] is agree and not v["passed"]


def test_read_losses_orders_steps_and_skips_validation_rows(tmp_path):
    log = tmp_path / "quickstart" / "run" / "csv" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,train/loss,val/abs_rel\n0,2,0.5,\n0,0,0.9,\n0,1,0.7,\n0,2,,0.3\n")
    assert gpu_check.read_losses(tmp_path) == [0.9, 0.7, 0.5]


def test_gpu_goals_read_the_three_ratios_from_bench_rows():
    rows = [
        {"name": "inference ZoeD-N beit_large_patch16_384 384x512 batch 1 (ours ...)", "ratio": 0.65},
        {"name": "train step time ZoeD-N beit_large_patch16_384 384x512 batch 16: ours vs original", "ratio": 0.5},
        {"name": "train step time ZoeD-N beit_large_patch16_384 384x512 batch 16: ours+bf16 vs original+bf16",
         "ratio": 0.7},
        {"name": "train step peak memory ZoeD-N beit_large_patch16_384 384x512 batch 16: ours+bf16 vs "
                 "original+bf16", "ratio": 0.4},
    ]
    goals = {g["goal"]: g for g in gpu_check.gpu_goals(rows)}
    assert [g["ratio"] for g in goals.values()] == [0.7, 0.4, 0.65]
    assert [g["met"] for g in goals.values()] == [False, True, True]
    assert all(g["ratio"] is None for g in gpu_check.gpu_goals([]))


def test_refuses_a_used_output_folder_and_a_missing_gpu(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "RESULTS.md").write_text("earlier run\n")
    assert gpu_check.main(["--dry-run", "--out", str(used)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (used / "RESULTS.md").read_text() == "earlier run\n"
    import torch

    if not torch.cuda.is_available():
        assert gpu_check.main(["--out", str(tmp_path / "new")]) == 2
        assert "--dry-run" in capsys.readouterr().err


def test_dry_run_of_the_whole_check(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / "results.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["tests", "bench", "train"]
    assert all(s["passed"] for s in summary["steps"])
    assert summary["train"]["falls"] and summary["train"]["agree"]
    names = [r["name"] for r in summary["bench_rows"]]
    assert any(n.startswith("inference") for n in names)
    assert any("ours+bf16 vs original+bf16" in n for n in names)
    report = (out / "RESULTS.md").read_text()
    assert "| tests | passed" in report and "| train | passed" in report
    assert "gpu_check: passed" in proc.stdout
    for log in ("tests", "bench", "train_bf16", "train_cpu_fp32"):
        assert (out / "logs" / f"{log}.log").is_file()
