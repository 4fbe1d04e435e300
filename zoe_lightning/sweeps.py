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
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import UserError

__all__ = [
    "add_arguments",
    "run",
    "Sweep",
    "load_sweep",
    "expand_grid",
    "run_key",
    "format_args",
    "build_command",
    "SweepState",
    "find_resume_checkpoint",
    "launch",
    "slurm_array_script",
    "sweep_run_overrides",
]

SUPPORTED_MACROS = ("env", "interpreter", "program", "args", "args_no_hyphens", "args_no_boolean_flags")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
DISTRIBUTION_KEYS = ("min", "max", "distribution", "mu", "sigma", "q", "probabilities")


# ----------------------------------------------------------------------------------------------
# The sweep file
# ----------------------------------------------------------------------------------------------


@dataclass
class Sweep:
    name: str
    path: Path
    method: str
    parameters: Dict[str, Dict[str, Any]]
    command: List[str]
    program: Optional[str] = None
    notices: List[str] = field(default_factory=list)

    @property
    def varied(self) -> List[str]:
        """Names of the parameters with more than one value, in file order."""
        return [k for k, v in self.parameters.items() if "values" in v and len(v["values"]) > 1]


def load_sweep(path: os.PathLike, name: Optional[str] = None) -> Sweep:
    """Read and check a W&B sweep file. The sweep's name is ``name``, else the file's ``name:``,
    else the file's stem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such sweep file: {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: cannot parse YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a sweep file must hold a mapping")
    method = str(doc.get("method", "grid"))
    if method not in ("grid", "random", "bayes"):
        raise UserError(f"{path}: unknown method '{method}' (grid, random or bayes)")
    params = doc.get("parameters")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{path}: 'parameters' must be a non-empty mapping")
    notices = []
    checked: Dict[str, Dict[str, Any]] = {}
    for key, spec in params.items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: parameters.{key} must be a mapping with 'value' or 'values'")
        if "parameters" in spec:
            raise UserError(f"{path}: parameters.{key}: nested parameters are not supported; use dotted names")
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise UserError(f"{path}: parameters.{key}.values must be a non-empty list")
            checked[str(key)] = {"values": list(values)}
        elif "value" in spec:
            checked[str(key)] = {"value": spec["value"]}
        elif any(k in spec for k in DISTRIBUTION_KEYS):
            raise UserError(f"{path}: parameters.{key} is a distribution; sweep-local runs grids only"
                            " (give it 'values: [...]')")
        else:
            raise UserError(f"{path}: parameters.{key} needs 'value' or 'values'")
    if method != "grid":
        notices.append(f"{path.name}: method '{method}' is W&B-only; sweep-local runs the full grid of its values")
    command = doc.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command:
        raise UserError(f"{path}: 'command' must be a list")
    command = [str(c) for c in command]
    for chunk in command:
        m = re.fullmatch(r"\$\{(\w+)\}", chunk)
        if m and m.group(1) not in SUPPORTED_MACROS:
            raise UserError(f"{path}: command macro {chunk} is not supported offline"
                            f" (supported: {', '.join('${%s}' % s for s in SUPPORTED_MACROS)})")
    program = doc.get("program")
    if "${program}" in command and not program:
        raise UserError(f"{path}: the command uses ${{program}} but the file has no 'program'")
    sweep_name = name or str(doc.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep_name):
        raise UserError(f"{path}: sweep name '{sweep_name}' may hold only letters, digits, '.', '_' and '-'")
    return Sweep(name=sweep_name, path=path, method=method, parameters=checked, command=command,
                 program=str(program) if program else None, notices=notices)


def expand_grid(sweep: Sweep) -> List[Dict[str, Any]]:
    """Every combination of the ``values`` lists (first parameter slowest), fixed values included."""
    keys = list(sweep.parameters)
    choices = [sweep.parameters[k]["values"] if "values" in sweep.parameters[k] else [sweep.parameters[k]["value"]]
               for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _slug(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def run_key(params: Dict[str, Any], varied: Sequence[str]) -> str:
    """A readable folder name: the ``experiment`` value, then ``seed`` and the other varied parameters
    as ``<last dotted part><value>`` (e.g. ``naive_head-seed1``). Experiment and seed always appear,
    so a sweep launched again with one seed fixed (``--override seed=2``) gets new folders."""
    parts = [_slug(params["experiment"])] if "experiment" in params else []
    keys = (["seed"] if "seed" in params else []) + [k for k in varied if k not in ("experiment", "seed")]
    for k in keys:
        v = params[k]
        parts.append(_slug(v) if k == "experiment" else f"{k.rsplit('.', 1)[-1]}{_slug(v)}")
    return "-".join(parts) or "run"


def keyed_grid(sweep: Sweep) -> List[Tuple[str, Dict[str, Any]]]:
    """(key, params) for every grid point; keys made unique with a numeric suffix."""
    out, seen = [], {}
    for params in expand_grid(sweep):
        key = run_key(params, sweep.varied)
        if key in seen:
            seen[key] += 1
            key = f"{key}-{seen[key]}"
        else:
            seen[key] = 0
        out.append((key, params))
    return out


def format_args(params: Dict[str, Any]) -> Dict[str, List[str]]:
    """The argument lists the W&B agent substitutes for each macro (``name=value`` with Python's
    ``str`` of the value, as the agent formats them)."""
    flags = [f"{k}={v}" for k, v in params.items()]
    return {
        "args": ["--" + f for f in flags],
        "args_no_hyphens": flags,
        "args_no_boolean_flags": [("--" + k) if v is True else f"--{k}={v}"
                                  for k, v in params.items() if v is not False],
    }


def build_command(sweep: Sweep, params: Dict[str, Any], python: str = sys.executable,
                  extra: Sequence[str] = ()) -> List[str]:
    """The argv the W&B agent would run for ``params`` (``${env}`` dropped, ``${interpreter}`` ->
    ``python``, ``${envvar:NAME}`` -> its value), then ``extra``."""
    macros = format_args(params)
    argv: List[str] = []
    for chunk in sweep.command:
        m = re.fullmatch(r"\$\{(\w+)\}", chunk)
        if m:
            name = m.group(1)
            if name == "env":
                continue
            if name == "interpreter":
                argv.append(python)
            elif name == "program":
                argv.append(str(sweep.program))
            else:
                argv += macros[name]
            continue
        argv.append(re.sub(r"\$\{envvar:([A-Za-z0-9_]+)\}", lambda mm: os.environ.get(mm.group(1), ""), chunk))
    if argv and argv[0] == "python":
        argv[0] = python
    return argv + list(extra)


# ----------------------------------------------------------------------------------------------
# State and resume
# ----------------------------------------------------------------------------------------------


class SweepState:
    """Per-run status files under ``<root>/state/<key>.json`` (one file per run, so parallel
    workers and SLURM array tasks never write the same file)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.state_dir = self.root / "state"
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.state_dir / f"{key}.json"

    def get(self, key: str) -> Dict[str, Any]:
        p = self.path(key)
        if not p.is_file():
            return {"status": "pending", "attempts": 0}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {"status": "pending", "attempts": 0}

    def update(self, key: str, **values: Any) -> Dict[str, Any]:
        with self._lock:
            record = self.get(key)
            record.update(values)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.path(key).with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=2, default=str))
            os.replace(tmp, self.path(key))
            return record


def find_resume_checkpoint(output_dir: Path) -> Optional[Path]:
    """The newest ``last.ckpt`` (or Lightning SLURM ``hpc_ckpt_*.ckpt``) under a run's output folder."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    cands = list(output_dir.rglob("last.ckpt")) + list(output_dir.rglob("hpc_ckpt_*.ckpt"))
    cands = [c for c in cands if c.is_file()]
    return max(cands, key=lambda c: c.stat().st_mtime) if cands else None


def _finished_run_dir(output_dir: Path, since: float) -> Optional[str]:
    hits = [p for p in Path(output_dir).rglob("summary.json") if p.stat().st_mtime >= since - 1]
    return str(max(hits, key=lambda p: p.stat().st_mtime).parent) if hits else None


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

Runner = Callable[[List[str], Dict[str, str], Path], int]


def subprocess_runner(argv: List[str], env: Dict[str, str], log_path: Path) -> int:
    """Run ``argv``, output teed to ``log_path`` and (prefixed) to stdout; SIGTERM / SIGUSR1 are
    forwarded to the child so Lightning can checkpoint or requeue."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"[{log_path.stem}] "
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        forwarded, terminated = {}, []

        def forward(signum, _frame):
            proc.send_signal(signum)
            if signum == signal.SIGTERM:  # the launcher is being stopped: stop after the trainer
                terminated.append(signum)

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
                if sig is not None:
                    forwarded[sig] = signal.signal(sig, forward)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(prefix + line)
            rc = proc.wait()
            if terminated:
                raise KeyboardInterrupt
            return rc
        finally:
            for sig, old in forwarded.items():
                signal.signal(sig, old)
            if proc.poll() is None:  # interrupted: let the trainer stop cleanly, then make sure
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def detect_gpus() -> List[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch always present here
        return []


def _sweep_root(sweep: Sweep, root: Path) -> Path:
    return Path(root) / "sweeps" / sweep.name


def plan(sweep: Sweep, state: SweepState, retry_failed: bool = True) -> List[Tuple[str, Dict[str, Any], str]]:
    """(key, params, action) per grid point; action: skip (finished), start, resume or retry."""
    out = []
    for key, params in keyed_grid(sweep):
        status = state.get(key).get("status", "pending")
        if status == "finished":
            action = "skip"
        elif status == "failed":
            action = "retry" if retry_failed else "skip"
        elif status in ("running", "interrupted"):
            action = "resume"
        else:
            action = "start"
        out.append((key, params, action))
    return out


def run_one(sweep: Sweep, key: str, params: Dict[str, Any], state: SweepState, root: Path,
            runner: Runner = subprocess_runner, device: Optional[str] = None, python: str = sys.executable,
            extra_env: Optional[Dict[str, str]] = None, record: bool = True) -> int:
    """Run (or resume) one grid point, recording its state (unless ``record`` is false: the
    non-zero ranks of a multi-GPU SLURM task); returns the exit status."""
    sroot = _sweep_root(sweep, root)
    out_dir = sroot / key
    extra = [f"output_dir={out_dir}"]
    ckpt = find_resume_checkpoint(out_dir)
    if ckpt is not None:
        extra += ["--resume", str(ckpt)]
    argv = build_command(sweep, params, python=python, extra=extra)
    env = dict(os.environ)
    env.update(extra_env or {})
    env["ZOE_SWEEP"] = sweep.name
    env.setdefault("WANDB_MODE", "offline")
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(device)
    started = time.time()
    if not record:
        return runner(argv, env, sroot / "logs" / f"{key}.rank{os.environ.get('SLURM_PROCID', '?')}.log")
    record_ = state.get(key)
    state.update(key, status="running", params=params, attempts=int(record_.get("attempts", 0)) + 1,
                 output_dir=str(out_dir), command=argv, device=device, resumed_from=str(ckpt) if ckpt else None,
                 started_at=time.strftime("%Y-%m-%dT%H:%M:%S"), host=os.uname().nodename)
    print(f"sweep {sweep.name}: {'resuming' if ckpt else 'starting'} {key}"
          + (f" on device {device}" if device is not None else "") + (f" from {ckpt}" if ckpt else ""))
    try:
        rc = runner(argv, env, sroot / "logs" / f"{key}.log")
    except KeyboardInterrupt:
        state.update(key, status="interrupted", returncode=None)
        raise
    status = "finished" if rc == 0 else "failed"
    state.update(key, status=status, returncode=rc, run_dir=_finished_run_dir(out_dir, started) if rc == 0 else None,
                 duration_s=round(time.time() - started, 1), ended_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    print(f"sweep {sweep.name}: {key} {status} (exit {rc}, {time.time() - started:.0f} s)")
    return rc


def launch(sweep: Sweep, root: Path = Path("runs"), parallel: int = 1, devices: Optional[Sequence[str]] = None,
           runner: Runner = subprocess_runner, retry_failed: bool = True, python: str = sys.executable,
           only: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Run the pending grid points; returns key -> final status for every grid point."""
    state = SweepState(_sweep_root(sweep, root))
    todo = [(k, p, a) for k, p, a in plan(sweep, state, retry_failed) if a != "skip" and (not only or k in only)]
    done = [k for k, _, a in plan(sweep, state, retry_failed) if a == "skip"]
    for n in sweep.notices:
        print(f"sweep {sweep.name}: {n}")
    print(f"sweep {sweep.name}: {len(expand_grid(sweep))} runs, {len(done)} skipped, {len(todo)} to run"
          f" ({parallel} at a time)" + (f" on devices {','.join(devices)}" if devices else ""))
    if devices:
        slots: List[Optional[str]] = list(devices)
    else:
        slots = [None] * max(1, parallel)
    free = list(slots)
    lock = threading.Lock()

    def work(item):
        key, params, action = item
        current = state.get(key).get("status")
        if current == "finished" or (current == "running" and action != "resume"):
            print(f"sweep {sweep.name}: {key} is {current} (another launcher), skipped")
            return 0
        with lock:
            dev = free.pop(0)
        try:
            return run_one(sweep, key, params, state, root, runner, dev, python)
        finally:
            with lock:
                free.append(dev)

    workers = max(1, min(parallel, len(slots)))
    try:
        if workers == 1:
            for item in todo:
                work(item)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, todo))
    except KeyboardInterrupt:
        for key, _, _ in todo:
            if state.get(key).get("status") == "running":
                state.update(key, status="interrupted")
        print(f"\nsweep {sweep.name}: interrupted; launch the same command again to resume")
        raise
    return {k: state.get(k).get("status", "pending") for k, _ in keyed_grid(sweep)}


def status_table(sweep: Sweep, root: Path = Path("runs")) -> str:
    state = SweepState(_sweep_root(sweep, root))
    lines = [f"{'run':<40} {'status':<12} {'attempts':>8}  run folder"]
    for key, _ in keyed_grid(sweep):
        rec = state.get(key)
        lines.append(f"{key:<40} {rec.get('status', 'pending'):<12} {rec.get('attempts', 0):>8}  {rec.get('run_dir') or '-'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# SLURM job array
# ----------------------------------------------------------------------------------------------


def slurm_array_script(sweep: Sweep, sweep_file: Path, root: Path = Path("runs"), gpus_per_run: int = 1,
                       max_concurrent: Optional[int] = None, partition: Optional[str] = None,
                       time_limit: Optional[str] = None, account: Optional[str] = None, cpus_per_task: int = 8,
                       python: str = "python", workdir: Optional[Path] = None) -> str:
    """An sbatch script running one grid point per array task through ``sweep-local --index``
    (so state, resume and requeue work as for local runs)."""
    n = len(expand_grid(sweep))
    sroot = _sweep_root(sweep, root)
    array = f"0-{n - 1}" + (f"%{max_concurrent}" if max_concurrent else "")
    from .slurm import sbatch_directives

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
        "export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1",
        "# one run folder per array task, kept across requeues (all ranks of a task agree on it)",
        "export ZOE_RUN_ID=sweep-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}",
        "srun " + " ".join(shlex.quote(c) if not c.startswith("${") else f'"{c}"' for c in cmd),
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The program a sweep command runs: `zoe-lightning sweep-run experiment=NAME key=value ...`
# ----------------------------------------------------------------------------------------------


def sweep_run_overrides(items: Sequence[str], sweep: Optional[str] = None) -> Tuple[str, List[str]]:
    """Split ``experiment=NAME`` from the other ``key=value`` items; add ``group=<sweep>`` unless
    given. Returns (experiment, overrides)."""
    experiment, rest = None, []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"sweep-run: argument '{item}' is not of the form key=value")
        if key == "experiment":
            experiment = value
        else:
            rest.append(item)
    if not experiment:
        raise UserError("sweep-run: missing experiment=NAME (a sweep parameter)")
    if sweep and not any(i.partition("=")[0] == "group" for i in rest):
        rest.append(f"group={sweep}")
    return experiment, rest


def tag_run(cfg, extra_tags: Sequence[str] = ()) -> None:
    """Append the variant (experiment name), ``seed<N>`` and ``extra_tags`` to ``cfg.tags`` (no duplicates)."""
    tags = list(cfg.tags)
    for t in [cfg.name, f"seed{cfg.seed}", *extra_tags]:
        if t and t not in tags:
            tags.append(t)
    cfg.tags = tags


def sweep_run_main(items: Sequence[str], resume: Optional[str] = None) -> int:
    from .config import load_config
    from .train import train

    sweep = os.environ.get("ZOE_SWEEP")
    if not sweep and os.environ.get("WANDB_SWEEP_ID"):
        sweep = f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    experiment, overrides = sweep_run_overrides(items, sweep)
    cfg = load_config(experiment, overrides)
    tag_run(cfg, [f"sweep:{cfg.group}"] if cfg.group else [])
    train(cfg, resume=resume)
    return 0


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


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
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time", default=None, help="SLURM time limit per run, e.g. 24:00:00")
    parser.add_argument("--account", default=None)
    parser.add_argument("--gpus-per-run", type=int, default=1)
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
        path = _sweep_root(sweep, args.root) / f"{sweep.name}.sbatch"
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
        state = SweepState(_sweep_root(sweep, args.root))
        if state.get(key).get("status") == "finished":
            print(f"sweep {sweep.name}: {key} already finished")
            return 0
        rank0 = os.environ.get("SLURM_PROCID", "0") == "0"  # only rank 0 of a task records the state
        return run_one(sweep, key, params, state, args.root, record=rank0)
    if args.dry_run:
        state = SweepState(_sweep_root(sweep, args.root))
        for n in sweep.notices:
            print(f"sweep {sweep.name}: {n}")
        for key, params, action in plan(sweep, state, not args.no_retry_failed):
            extra = [f"output_dir={_sweep_root(sweep, args.root) / key}"]
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
