"""One prepared GPU check: tests, benchmark rows 1-2 and a short bf16 training run, in one folder.

``benchmarks/gpu_check.sh`` chooses the Python and runs this file; see ``docs/gpu.md``.

    python benchmarks/gpu_check.py --out gpu_check            # on a machine with one CUDA GPU
    python benchmarks/gpu_check.py --dry-run --out /tmp/gc    # CPU, tiny sizes, same code paths

Steps (each in its own process, each with its log under OUT/logs/):

1. ``tests``  the ``gpu``-marked tests (``tests/gpu``), on the GPU (on the CPU in a dry run);
2. ``bench``  ``benchmarks/run.py --rows 1,2`` with the GPU rows: ZoeD-N BEiT-L-384 inference vs HF,
              the BEiT-L training step at batch 16 (original's way vs ours, fp32 and bf16-mixed,
              grad checkpointing and compile variants), results in OUT/bench/;
3. ``train``  ``quickstart`` for a fixed number of steps with ``trainer.precision=bf16-mixed`` on the
              device, and the same steps in fp32 on the CPU: the loss must fall, and the first steps'
              losses must agree within ``--loss-rtol`` (bf16 rounds to 3 significant digits).

It writes OUT/RESULTS.md, OUT/results.json and prints a one-screen summary; exit 0 only when every
step passed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent

# run.py arguments per mode; the dry run keeps every code path but at the smallest sizes
BENCH_GPU = ["--device", "cuda", "--rows", "1,2", "--reps", "5", "--warmup", "2",
             "--variants", "original,ours,ours+grad_checkpointing,ours+compile,original+bf16,ours+bf16"]
BENCH_DRY = ["--device", "cpu", "--rows", "1,2", "--quick", "--reps", "1", "--warmup", "0", "--backbones", "test_beit",
             "--size", "64x96", "--train-backbone", "test_beit", "--train-size", "32x48", "--train-models", "N",
             "--variants", "original,ours,original+bf16,ours+bf16"]

# the quickstart run compared between the device (bf16-mixed) and the CPU (fp32)
TRAIN_COMMON = ["trainer.log_every_n_steps=1", "trainer.limit_val_batches=1", "logger.wandb=false",
                "callbacks.depth_panels_every=0", "callbacks.rich=false", "data.num_workers=0",
                "trainer.deterministic=false", "trainer.extra={num_sanity_val_steps: 0}"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU device, tiny sizes: checks the check itself")
    p.add_argument("--out", default="gpu_check", help="output folder (created; must not hold an earlier run)")
    p.add_argument("--steps", type=int, default=None, help="training steps of the bf16 run (default 60; dry run 6)")
    p.add_argument("--compare-steps", type=int, default=3, help="first steps whose losses must agree with the CPU")
    p.add_argument("--loss-rtol", type=float, default=0.05, help="relative tolerance of that agreement")
    p.add_argument("--skip", default="", help="comma-separated steps to skip: tests,bench,train")
    p.add_argument("--timeout", type=int, default=420, help="seconds allowed per step")
    return p.parse_args(argv)


def _env(dry_run: bool) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if dry_run:
        env["ZOE_TEST_DEVICE"] = "cpu"  # tests/gpu run their CUDA code paths on the CPU
    return env


def run_step(name: str, cmd: List[str], out: Path, env: Dict[str, str], timeout: int) -> Dict[str, object]:
    """Run one command, its output to OUT/logs/NAME.log; returns status, seconds and the log's tail."""
    log = out / "logs" / f"{name}.log"
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    text = log.read_text(errors="replace").splitlines()
    return {"step": name, "rc": rc, "seconds": round(time.time() - t0, 1), "log": str(log), "tail": text[-5:]}


def read_losses(run_root: Path) -> List[float]:
    """Per-step ``train/loss`` of the one run under ``run_root`` (its CSV log), in step order."""
    logs = sorted(run_root.glob("*/*/csv/metrics.csv"))
    if len(logs) != 1:
        raise RuntimeError(f"expected one CSV log under {run_root}, found {len(logs)}")
    by_step: Dict[int, float] = {}
    with open(logs[0]) as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                by_step[int(row["step"])] = float(row["train/loss"])
    return [by_step[s] for s in sorted(by_step)]


def loss_verdict(device_losses: Sequence[float], cpu_losses: Sequence[float], compare_steps: int,
                 rtol: float) -> Dict[str, object]:
    """The training check: the device loss falls, and its first steps match the CPU's fp32 losses."""
    n = len(device_losses)
    k = max(1, min(5, n // 3))
    first, last = sum(device_losses[:k]) / k, sum(device_losses[-k:]) / k
    falls = n >= 2 and last < first
    pairs = list(zip(device_losses[:compare_steps], cpu_losses[:compare_steps]))
    rel = [abs(d - c) / max(abs(c), 1e-12) for d, c in pairs]
    agree = len(pairs) == compare_steps and all(r <= rtol for r in rel)
    return {"steps": n, "first_mean": first, "last_mean": last, "falls": falls, "first_steps_device": device_losses[:compare_steps],
            "first_steps_cpu": list(cpu_losses[:compare_steps]), "relative_differences": rel, "rtol": rtol,
            "agree": agree, "passed": bool(falls and agree)}


def train_check(args, out: Path, env: Dict[str, str]) -> Dict[str, object]:
    steps = args.steps or (6 if args.dry_run else 60)
    device = "cpu" if args.dry_run else "gpu"
    base = [sys.executable, "-m", "zoe_lightning", "train", "quickstart", *TRAIN_COMMON,
            f"trainer.val_check_interval={steps}"]
    runs = {
        "train_bf16": base + [f"output_dir={out / 'train' / 'bf16'}", f"trainer.max_steps={steps}",
                              f"trainer.accelerator={device}", "trainer.precision=bf16-mixed"],
        "train_cpu_fp32": base + [f"output_dir={out / 'train' / 'cpu_fp32'}", f"trainer.max_steps={args.compare_steps}",
                                  "trainer.val_check_interval=" + str(args.compare_steps),
                                  "trainer.accelerator=cpu", "trainer.precision=32-true"],
    }
    results = {name: run_step(name, cmd, out, env, args.timeout) for name, cmd in runs.items()}
    verdict: Dict[str, object] = {"runs": results}
    if all(r["rc"] == 0 for r in results.values()):
        try:
            verdict.update(loss_verdict(read_losses(out / "train" / "bf16"), read_losses(out / "train" / "cpu_fp32"),
                                        args.compare_steps, args.loss_rtol))
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            verdict.update(passed=False, error=str(exc))
    else:
        verdict["passed"] = False
    return verdict


def bench_rows(out: Path) -> List[dict]:
    path = out / "bench" / "RESULTS.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("rows", [])


def gpu_goals(rows: Sequence[dict]) -> List[Dict[str, object]]:
    """The issue's three GPU goals, read from the bench rows (ratios within this one run)."""
    def find(*words):
        for r in rows:
            name = r.get("name", "")
            if all(w in name for w in words) and r.get("ratio") is not None:
                return r
        return None

    goals = []
    bf16 = "ours+bf16 vs original+bf16"
    for label, words, goal in (("training step BEiT-L batch 16 bf16, ours / original", ("time", "ZoeD-N", bf16), 0.6),
                               ("training step peak memory bf16, ours / original", ("memory", "ZoeD-N", bf16), 0.6),
                               ("inference ZoeD-N BEiT-L, ours / HF", ("inference", "beit_large"), 0.7)):
        r = find(*words)
        goals.append({"goal": label, "target": goal, "ratio": None if r is None else r["ratio"],
                      "row": None if r is None else r["name"],
                      "met": None if r is None else bool(r["ratio"] <= goal)})
    return goals


def write_report(out: Path, summary: Dict[str, object]) -> str:
    lines = ["# GPU check", "", f"- mode: {'dry run (CPU, tiny sizes)' if summary['dry_run'] else 'GPU'}",
             f"- device: {summary['device']}", f"- torch {summary['torch']}", f"- total: {summary['seconds']:.0f} s", "",
             "| step | status | seconds | log |", "|---|---|---|---|"]
    for s in summary["steps"]:
        status = "passed" if s.get("passed") else "skipped" if s.get("skipped") else "**failed**"
        lines.append(f"| {s['step']} | {status} | {s.get('seconds', '-')} | {s.get('log', '-')} |")
    train = summary.get("train") or {}
    if "first_steps_device" in train:
        lines += ["", "Training check (quickstart):", "",
                  f"- loss falls: {train['falls']} (mean of first steps {train['first_mean']:.4f}, "
                  f"of last steps {train['last_mean']:.4f}, {train['steps']} steps)",
                  f"- first steps, device bf16-mixed: {[round(x, 5) for x in train['first_steps_device']]}",
                  f"- first steps, CPU fp32:          {[round(x, 5) for x in train['first_steps_cpu']]}",
                  f"- relative differences: {[round(x, 4) for x in train['relative_differences']]} "
                  f"(tolerance {train['rtol']})"]
    if summary.get("bench_rows"):
        lines += ["", "Benchmark rows (ratio = ours / reference, this run):", "",
                  "| row | measurement | ratio | goal | met |", "|---|---|---|---|---|"]
        for r in summary["bench_rows"]:
            ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.3f}"
            goal = "-" if r.get("goal") is None else f"<= {r['goal']:g}"
            lines.append(f"| {r['row']} | {r['name']} | {ratio} | {goal} | {r.get('met', '-')} |")
    if summary.get("goals"):
        lines += ["", "Goals of the GPU issue:", ""]
        for g in summary["goals"]:
            ratio = "not measured" if g["ratio"] is None else f"{g['ratio']:.3f}"
            lines.append(f"- {g['goal']}: {ratio} (goal <= {g['target']})")
    text = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        print(f"gpu_check: {out} exists and is not empty; name a new --out folder", file=sys.stderr)
        return 2
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = _env(args.dry_run)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device = "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    t0 = time.time()
    steps: List[Dict[str, object]] = []
    summary: Dict[str, object] = {"dry_run": args.dry_run, "device": device, "torch": torch.__version__, "steps": steps}

    if "tests" in skip:
        steps.append({"step": "tests", "skipped": True})
    else:
        r = run_step("tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider"],
                     out, env, args.timeout)
        r["passed"] = r["rc"] == 0
        steps.append(r)
    if "bench" in skip:
        steps.append({"step": "bench", "skipped": True})
    else:
        cmd = [sys.executable, "benchmarks/run.py", *(BENCH_DRY if args.dry_run else BENCH_GPU), "--out", str(out / "bench")]
        r = run_step("bench", cmd, out, env, args.timeout)
        rows = bench_rows(out)
        failed_rows = [x["name"] for x in rows if str(x.get("note", "")).startswith("failed")]
        r["passed"] = r["rc"] == 0 and bool(rows) and not failed_rows
        r["failed_rows"] = failed_rows
        steps.append(r)
        summary["bench_rows"] = rows
        summary["goals"] = [] if args.dry_run else gpu_goals(rows)
    if "train" in skip:
        steps.append({"step": "train", "skipped": True})
    else:
        verdict = train_check(args, out, env)
        summary["train"] = {k: v for k, v in verdict.items() if k != "runs"}
        seconds = sum(float(r["seconds"]) for r in verdict["runs"].values())
        steps.append({"step": "train", "passed": verdict["passed"], "seconds": round(seconds, 1),
                      "log": ", ".join(str(r["log"]) for r in verdict["runs"].values())})
    summary["seconds"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    print(write_report(out, summary), end="")
    ok = all(s.get("passed") or s.get("skipped") for s in steps)
    print(f"gpu_check: {'passed' if ok else 'FAILED'}; results in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
