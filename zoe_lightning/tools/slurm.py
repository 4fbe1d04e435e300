"""Write (and submit) an sbatch script that trains an experiment on NODES x GPUS with SLURM.

``zoe-lightning slurm EXP --nodes N --gpus G [--partition P --time T --account A --dry-run] [overrides]``

The script starts one task per GPU with ``srun``; Lightning reads the SLURM environment (ranks,
nodes, main address) itself. ``--signal=SIGUSR1@90`` lets Lightning save a checkpoint and requeue
the job shortly before its time limit; ``ZOE_RUN_ID=slurm-$SLURM_JOB_ID`` keeps one run directory
per job across requeues, and ``--resume auto`` continues from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import UserError

__all__ = ["add_arguments", "run", "render_script", "train_command", "script_path"]

REQUEUE_SIGNAL = "SIGUSR1@90"  # Lightning's SLURMEnvironment auto-requeue listens for SIGUSR1


def _add_options(parser, suppress: bool = False) -> None:
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--nodes", type=int, default=default(1), help="number of nodes (trainer.num_nodes)")
    parser.add_argument("--gpus", type=int, default=default(1),
                        help="GPUs per node = tasks per node (trainer.devices); 0 = one CPU task per node")
    parser.add_argument("--partition", default=default(None), help="SLURM partition")
    parser.add_argument("--time", default=default(None),
                        help="time limit, e.g. 24:00:00 (the job requeues itself shortly before it)")
    parser.add_argument("--account", default=default(None), help="SLURM account")
    parser.add_argument("--cpus-per-task", type=int, default=default(8), help="CPU cores per task (loader workers)")
    parser.add_argument("--mem", default=default(None), help="memory per node, e.g. 200G")
    parser.add_argument("--job-name", default=default(None), help="job name (default zoe-EXP)")
    parser.add_argument("--sbatch", action="append", default=default([]), metavar="OPTION",
                        help="extra #SBATCH option, e.g. --sbatch=--constraint=a100 (repeatable)")
    parser.add_argument("--setup", action="append", default=default([]), metavar="COMMAND",
                        help="shell line run before srun, e.g. --setup='module load cuda' (repeatable)")
    parser.add_argument("--python", default=default(None),
                        help="python on the compute nodes (default: this interpreter)")
    parser.add_argument("--dry-run", action="store_true", default=default(False),
                        help="write and print the script, do not submit")


def add_arguments(parser) -> None:
    _add_options(parser)
    parser.add_argument("experiment", help="experiment name (experiments/NAME.yaml) or path to a YAML file")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="key=value overrides passed on to `train` (options may come before or after them)")


def _split_rest(args) -> None:
    """Options may follow the experiment name (``slurm EXP --nodes 2 a=b``): parse them out of the rest."""
    parser = argparse.ArgumentParser(prog="zoe-lightning slurm", add_help=False)
    _add_options(parser, suppress=True)
    parser.add_argument("overrides", nargs="*")
    rest = parser.parse_intermixed_args(list(args.overrides or []))
    for key, value in vars(rest).items():
        if key == "sbatch" or key == "setup":
            value = list(getattr(args, key, []) or []) + list(value)
        setattr(args, key, value)


def train_command(experiment: str, overrides: Sequence[str], nodes: int, gpus: int,
                  python: Optional[str] = None) -> List[str]:
    """argv each SLURM task runs: ``train EXP --resume auto`` + the user's and the allocation's overrides."""
    allocation = ([f"trainer.accelerator={'gpu' if gpus > 0 else 'cpu'}", f"trainer.devices={max(gpus, 1)}",
                   f"trainer.num_nodes={nodes}"])
    return [python or sys.executable, "-m", "zoe_lightning", "train", experiment, *overrides, *allocation,
            "--resume", "auto"]


def sbatch_directives(*, job_name: str, nodes: int, gpus: int, cpus_per_task: int, output: str,
                      array: Optional[str] = None, mem: Optional[str] = None, time_limit: Optional[str] = None,
                      partition: Optional[str] = None, account: Optional[str] = None, append_log: bool = False,
                      extra: Sequence[str] = ()) -> List[str]:
    """``#SBATCH`` lines of a job (or job array) that Lightning can requeue: one task per GPU
    (Lightning runs one process per device), SIGUSR1 shortly before the time limit, ``--requeue``."""
    directives = [f"--job-name={job_name}"]
    if array:
        directives.append(f"--array={array}")
    directives += [f"--nodes={nodes}", f"--ntasks-per-node={max(gpus, 1)}", f"--cpus-per-task={cpus_per_task}"]
    if gpus > 0:
        directives.append(f"--gres=gpu:{gpus}")
    for flag, value in (("--mem", mem), ("--time", time_limit), ("--partition", partition), ("--account", account)):
        if value:
            directives.append(f"{flag}={value}")
    directives += [f"--signal={REQUEUE_SIGNAL}", "--requeue"]
    if append_log:
        directives.append("--open-mode=append")
    directives.append(f"--output={output}")
    directives += [opt if opt.startswith("-") else f"--{opt}" for opt in extra]
    return [f"#SBATCH {d}" for d in directives]


def render_script(experiment: str, overrides: Sequence[str], *, nodes: int = 1, gpus: int = 1,
                  partition: Optional[str] = None, time_limit: Optional[str] = None, account: Optional[str] = None,
                  cpus_per_task: int = 8, mem: Optional[str] = None, job_name: Optional[str] = None,
                  log_dir: str = "runs/slurm", workdir: Optional[str] = None, python: Optional[str] = None,
                  extra_sbatch: Sequence[str] = (), setup: Sequence[str] = ()) -> str:
    """The sbatch script's text (nothing is written or run)."""
    if nodes < 1:
        raise UserError(f"--nodes must be >= 1, got {nodes}")
    if gpus < 0:
        raise UserError(f"--gpus must be >= 0, got {gpus}")
    name = job_name or f"zoe-{Path(experiment).stem}"
    workdir = workdir or str(Path(__file__).resolve().parents[2])  # the repository root
    directives = sbatch_directives(
        job_name=name, nodes=nodes, gpus=gpus, cpus_per_task=cpus_per_task, output=f"{log_dir}/%x-%j.out",
        mem=mem, time_limit=time_limit, partition=partition, account=account, append_log=True, extra=extra_sbatch,
    )
    command = " ".join(shlex.quote(part) for part in train_command(experiment, overrides, nodes, gpus, python))
    lines = [
        "#!/bin/bash",
        f"# zoe-lightning slurm: experiment '{experiment}' on {nodes} node(s) x {max(gpus, 1)} "
        f"{'GPU' if gpus > 0 else 'CPU task'}(s), written {time.strftime('%Y-%m-%d %H:%M:%S')}",
        *directives,
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(workdir)}",
        f"export PYTHONPATH={shlex.quote(workdir)}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1",
        "export WANDB_MODE=${WANDB_MODE:-offline}  # compute nodes often have no internet: wandb sync later",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        "# one run directory per job, kept when the job is requeued: runs/<experiment>/slurm-<job id>",
        "export ZOE_RUN_ID=slurm-${SLURM_JOB_ID}",
        *setup,
        "",
        "# each task is one DDP process; after a requeue, --resume auto continues from the newest checkpoint",
        f"srun {command}",
        "",
    ]
    return "\n".join(lines)


def script_path(log_dir: Path, experiment: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = log_dir / f"{Path(experiment).stem}-{stamp}.sbatch"
    suffix = 1
    while path.exists():
        path = log_dir / f"{Path(experiment).stem}-{stamp}-{suffix}.sbatch"
        suffix += 1
    return path


def run(args) -> int:
    from ..config import load_config

    _split_rest(args)
    cfg = load_config(args.experiment, args.overrides)  # bad keys fail here, before anything is queued
    log_dir = Path(cfg.output_dir) / "slurm"
    text = render_script(
        args.experiment, list(args.overrides), nodes=args.nodes, gpus=args.gpus, partition=args.partition,
        time_limit=args.time, account=args.account, cpus_per_task=args.cpus_per_task, mem=args.mem,
        job_name=args.job_name, log_dir=str(log_dir.resolve()), python=args.python, extra_sbatch=args.sbatch,
        setup=args.setup,
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    path = script_path(log_dir, args.experiment)
    path.write_text(text)
    run_dir = Path(cfg.output_dir) / cfg.name / "slurm-<job id>"
    if args.dry_run:
        print(text, end="")
        print(f"# written to {path} (not submitted: --dry-run); submit with: sbatch {path}", file=sys.stderr)
        return 0
    if shutil.which("sbatch") is None:
        raise UserError(f"sbatch not found on PATH (not on a SLURM login node?): the script is written to {path};"
                        " submit it there with 'sbatch', or pass --dry-run to only write and print it")
    proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"sbatch {path} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    job = proc.stdout.strip().split(";")[0]
    name = args.job_name or f"zoe-{Path(args.experiment).stem}"
    print(f"submitted job {job}: {path}")
    print(f"  log:     {log_dir / f'{name}-{job}.out'}")
    print(f"  run dir: {str(run_dir).replace('<job id>', job)}")
    return 0
