"""Running the grid locally: per-run state files (resume, skip finished), the subprocess runner
that forwards SIGTERM / SIGUSR1, and ``launch`` (``--parallel N`` at a time, one GPU each)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .grid import Sweep, build_command, expand_grid, keyed_grid
from .lock import PointLock

__all__ = ["SweepState", "find_resume_checkpoint", "subprocess_runner", "detect_gpus", "sweep_root", "plan",
           "run_one", "launch", "status_table", "point_lock"]


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


def sweep_root(sweep: Sweep, root: Path) -> Path:
    return Path(root) / "sweeps" / sweep.name


def point_lock(sweep: Sweep, root: Path, key: str) -> PointLock:
    """The lock file of one grid point (see :mod:`.lock`); held while a launcher runs that point."""
    return PointLock(sweep_root(sweep, root) / "locks" / f"{key}.lock")


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
    sroot = sweep_root(sweep, root)
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
    state = SweepState(sweep_root(sweep, root))
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
    held: List[str] = []  # the grid points this launcher runs now
    planned = {key: state.get(key).get("attempts", 0) for key, _, _ in todo}  # a change: run by another launcher

    def work(item):
        key, params, action = item
        with point_lock(sweep, root, key) as point:
            if not point.acquired:
                print(f"sweep {sweep.name}: {key} is being run by {point.describe()} (lock {point.path}), skipped")
                return 0
            current = state.get(key).get("status")
            if (current == "finished" or (current == "running" and action != "resume")
                    or state.get(key).get("attempts", 0) != planned[key]):
                print(f"sweep {sweep.name}: {key} is {current} (another launcher), skipped")
                return 0
            with lock:
                dev = free.pop(0)
                held.append(key)
            try:
                return run_one(sweep, key, params, state, root, runner, dev, python)
            finally:
                with lock:
                    free.append(dev)
                    held.remove(key)

    workers = max(1, min(parallel, len(slots)))
    try:
        if workers == 1:
            for item in todo:
                work(item)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, todo))
    except KeyboardInterrupt:
        for key in list(held):  # only this launcher's runs; another launcher's keep their state
            if state.get(key).get("status") == "running":
                state.update(key, status="interrupted")
        print(f"\nsweep {sweep.name}: interrupted; launch the same command again to resume")
        raise
    return {k: state.get(k).get("status", "pending") for k, _ in keyed_grid(sweep)}


def status_table(sweep: Sweep, root: Path = Path("runs")) -> str:
    state = SweepState(sweep_root(sweep, root))
    lines = [f"{'run':<40} {'status':<12} {'attempts':>8}  run folder"]
    for key, _ in keyed_grid(sweep):
        rec = state.get(key)
        lines.append(f"{key:<40} {rec.get('status', 'pending'):<12} {rec.get('attempts', 0):>8}  {rec.get('run_dir') or '-'}")
    return "\n".join(lines)
