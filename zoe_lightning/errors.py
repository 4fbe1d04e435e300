"""Exceptions shared by the package."""


class UserError(Exception):
    """An error caused by the user's input (a path, a file, an option): shown as one line, no traceback."""
