"""Exceptions shared by the package."""

from __future__ import annotations

import re

__all__ = ["UserError", "TrainingDiverged", "RunInterrupted", "worker_message"]

# torch.utils.data re-raises an exception from a loader worker as ``type(exc)(text)`` where
# ``text`` is "Caught NAME in DataLoader worker process N.\nOriginal Traceback ...": the whole
# worker traceback, ending with "module.NAME: <the original message>".
_WORKER_WRAPPED = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def worker_message(text: str) -> str:
    """The original message of an exception that torch re-raised from a loader worker (``text`` as
    is when it was not)."""
    match = _WORKER_WRAPPED.match(text)
    if not match:
        return text
    last = None
    for last in re.finditer(rf"^(?:[\w.]+\.)?{match.group(1)}: ", text, flags=re.MULTILINE):
        pass
    return text[last.end():].strip() if last else text


class UserError(Exception):
    """An error caused by the user's input (a path, a file, an option): shown as one line, no traceback.

    Raised in a DataLoader worker, it reaches the main process with its own message, not the
    worker's traceback."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (worker_message(args[0]),)
        super().__init__(*args)


class TrainingDiverged(UserError):
    """Training stopped after ``trainer.max_bad_steps`` consecutive steps with a non-finite loss or gradient."""


class RunInterrupted(SystemExit):
    """Training stopped by SIGINT / SIGTERM after saving what it could; the exit code is 128 + signal number."""
