"""Exceptions shared by the package."""


class UserError(Exception):
    """An error caused by the user's input (a path, a file, an option): shown as one line, no traceback."""


class TrainingDiverged(UserError):
    """Training stopped after ``trainer.max_bad_steps`` consecutive steps with a non-finite loss or gradient."""


class RunInterrupted(SystemExit):
    """Training stopped by SIGINT / SIGTERM after saving what it could; the exit code is 128 + signal number."""
