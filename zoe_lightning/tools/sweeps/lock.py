"""One lock file per grid point, so that two launchers of one sweep never run the same point.

``<sweep root>/locks/<key>.lock`` is created with ``O_CREAT | O_EXCL`` (atomic, also on shared
file systems that honour it) and holds the owner's pid, host and SLURM array task. It is removed
when the run ends, however it ends (normal exit, failure, SIGTERM / Ctrl-C). A lock left behind
by a process that died without cleaning up is taken over when its owner is on this host and its
pid is gone, or when it belongs to this very SLURM array task (a requeued task). A lock held by a
live process, or by another host, is respected: that grid point is skipped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["PointLock", "pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _slurm_task() -> Optional[str]:
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else None


class PointLock:
    """``with PointLock(path) as lock: if lock.acquired: ...``; ``lock.owner`` describes the holder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.acquired = False
        self.owner: Dict[str, Any] = {}

    def _read(self) -> Dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, owner: Dict[str, Any]) -> bool:
        if not owner:  # empty or half-written: the writer may be between create and write
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        if owner.get("slurm_task") and owner.get("slurm_task") == _slurm_task():
            return True  # this array task, before a requeue
        return owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", 0)))

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_task": _slurm_task()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.owner = self._read()
                if not self._stale(self.owner):
                    return False
                try:  # stale: remove it and try again (another launcher may win the race)
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.acquired, self.owner = True, me
            return True
        return False

    def release(self) -> None:
        if self.acquired:
            self.acquired = False
            if self._read().get("pid") == os.getpid():
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass

    def describe(self) -> str:
        o = self.owner
        return f"pid {o.get('pid', '?')} on {o.get('host', '?')}" if o else "another launcher"

    def __enter__(self) -> "PointLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
