"""Run a W&B sweep file without W&B: ``zoe-lightning sweep-local SWEEP_FILE``.

The file is the one ``wandb sweep`` reads (``experiments/sweeps/*.yaml``). Its grid (every
combination of the ``values:`` lists, ``value:`` entries fixed) is run sequentially, ``--parallel N``
at a time (each run pinned to one GPU of ``--devices`` through CUDA_VISIBLE_DEVICES), or as a SLURM
job array (``--slurm``). Each run executes the file's ``command:`` with the W&B macros filled in as
the agent would, plus ``output_dir=runs/sweeps/<sweep>/<run>`` (and ``--resume <ckpt>`` when
resuming). Per-run state lives in ``runs/sweeps/<sweep>/state/<run>.json``: finished runs are
skipped when the sweep is launched again, interrupted or failed runs restart from their newest
``last.ckpt``. ``method: random`` / ``bayes`` files run their full grid (a notice says so);
parameters given as distributions (min/max) cannot be run offline and are refused.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from ...errors import UserError
from .grid import Sweep, build_command, expand_grid, keyed_grid, load_sweep
from .runner import SweepState, detect_gpus, launch, plan, point_lock, run_one, status_table, sweep_root

__all__ = ["add_arguments", "run", "slurm_array_script"]


def slurm_array_script(sweep: Sweep, sweep_file: Path, root: Path = Path("runs"), gpus_per_run: int = 1,
                       max_concurrent: Optional[int] = None, partition: Optional[str] = None,
                       time_limit: Optional[str] = None, account: Optional[str] = None, cpus_per_task: int = 8,
                       python: str = "python", workdir: Optional[Path] = None) -> str:
    """An sbatch script running one grid point per array task through ``sweep-local --index``
    (so state, resume and requeue work as for local runs)."""
    n = len(expand_grid(sweep))
    sroot = sweep_root(sweep, root)
    array = f"0-{n - 1}" + (f"%{max_concurrent}" if max_concurrent else "")
    from ..slurm import sbatch_directives

    lines = ["#!/bin/bash", *sbatch_directives(
        job_name=f"sweep-{sweep.name}", array=array, nodes=1, gpus=gpus_per_run, cpus_per_task=cpus_per_task,
        output=f"{sroot}/slurm/%A_%a.out", time_limit=time_limit, partition=partition, account=account,
    )]
    cmd = [python, "-m", "zoe_lightning", "sweep-local", str(sweep_file), "--name", sweep.name,
           "--root", str(root), "--index", "${SLURM_ARRAY_TASK_ID}"]
    if gpus_per_run > 1:
        cmd += ["--override", f"trainer.devices={gpus_per_run}"]
    lines += [
        "",
        f"# {n} runs of {sweep.path}; each task runs grid point $SLURM_ARRAY_TASK_ID and resumes it after a requeue.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir or Path.cwd()))}",
        "export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} NO_ALBUMENTATIONS_UPDATE=1",
        "# one run folder per array task, kept across requeues (all ranks of a task agree on it)",
        "export ZOE_RUN_ID=sweep-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}",
        "srun " + " ".join(shlex.quote(c) if not c.startswith("${") else f'"{c}"' for c in cmd),
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_file", type=Path, help="a W&B sweep file, e.g. experiments/sweeps/head_variants.yaml")
    parser.add_argument("--parallel", type=int, default=None, help="runs at a time (default: one per device, else 1)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated GPU ids, one run pinned to each (default: all visible GPUs)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="runs folder (state in <root>/sweeps/<sweep>)")
    parser.add_argument("--name", default=None, help="sweep name (default: the file's name: or its stem)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their command lines, run nothing")
    parser.add_argument("--status", action="store_true", help="print the state of every run and exit")
    parser.add_argument("--no-retry-failed", action="store_true", help="skip runs that failed before")
    parser.add_argument("--index", type=int, default=None, help="run only grid point INDEX (SLURM array task)")
    parser.add_argument("--override", action="append", default=[],
                        help="key=value added to every run (repeatable; e.g. trainer.max_epochs=1)")
    parser.add_argument("--slurm", action="store_true", help="write and submit a SLURM job array instead")
    parser.add_argument("--partition", default=None, help="SLURM partition (with --slurm)")
    parser.add_argument("--time", default=None, help="SLURM time limit per run, e.g. 24:00:00")
    parser.add_argument("--account", default=None, help="SLURM account (with --slurm)")
    parser.add_argument("--gpus-per-run", type=int, default=1, help="GPUs of each SLURM array task (default 1)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="SLURM array throttle (%%N)")


def _with_overrides(sweep: Sweep, overrides: Sequence[str]) -> Sweep:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--override '{item}' is not of the form key=value")
        import yaml

        sweep.parameters[key] = {"value": yaml.safe_load(value)}
    return sweep


def run(args: argparse.Namespace) -> int:
    sweep = _with_overrides(load_sweep(args.sweep_file, args.name), args.override)
    if "group" not in sweep.parameters:
        sweep.parameters["group"] = {"value": sweep.name}
    if args.status:
        print(status_table(sweep, args.root))
        return 0
    if args.slurm:
        script = slurm_array_script(sweep, args.sweep_file, args.root, args.gpus_per_run, args.max_concurrent,
                                    args.partition, args.time, args.account)
        if args.dry_run:
            print(script, end="")
            return 0
        path = sweep_root(sweep, args.root) / f"{sweep.name}.sbatch"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        if shutil.which("sbatch") is None:
            raise UserError(f"sbatch not found: the script is written to {path}; submit it on the cluster with"
                            " 'sbatch' (or use --dry-run to print it)")
        print(f"wrote {path}")
        return subprocess.call(["sbatch", str(path)])
    grid = keyed_grid(sweep)
    if args.index is not None:
        if not 0 <= args.index < len(grid):
            raise UserError(f"--index {args.index}: the sweep has {len(grid)} runs (0..{len(grid) - 1})")
        key, params = grid[args.index]
        state = SweepState(sweep_root(sweep, args.root))
        if state.get(key).get("status") == "finished":
            print(f"sweep {sweep.name}: {key} already finished")
            return 0
        rank0 = os.environ.get("SLURM_PROCID", "0") == "0"  # only rank 0 of a task records the state
        if not rank0:
            return run_one(sweep, key, params, state, args.root, record=False)
        with point_lock(sweep, args.root, key) as point:
            if not point.acquired:
                print(f"sweep {sweep.name}: {key} is being run by {point.describe()} (lock {point.path}), skipped")
                return 0
            return run_one(sweep, key, params, state, args.root)
    if args.dry_run:
        state = SweepState(sweep_root(sweep, args.root))
        for n in sweep.notices:
            print(f"sweep {sweep.name}: {n}")
        for key, params, action in plan(sweep, state, not args.no_retry_failed):
            extra = [f"output_dir={sweep_root(sweep, args.root) / key}"]
            print(f"[{action}] {key}: {shlex.join(build_command(sweep, params, extra=extra))}")
        return 0
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else detect_gpus()
    parallel = args.parallel or (len(devices) if devices else 1)
    if devices and parallel < len(devices):
        devices = devices[:parallel]
    try:
        result = launch(sweep, args.root, parallel, devices or None, retry_failed=not args.no_retry_failed)
    except KeyboardInterrupt:
        return 130
    print(status_table(sweep, args.root))
    failed = [k for k, s in result.items() if s != "finished"]
    if failed:
        print(f"sweep {sweep.name}: {len(failed)} run(s) not finished: {', '.join(failed)}")
        return 1
    print(f"sweep {sweep.name}: all {len(result)} runs finished -> zoe-lightning compare --group {sweep.name}")
    return 0
