"""Errors that are the user's to fix, told apart from bugs.

`qwen25-rl` prints a `UserError` as one message naming the file, key or row to fix, without a
traceback; any other exception is a bug and keeps its traceback. Raise a `UserError` (or one of
the two below, which stay catchable as the built-in error they refine) wherever the cause is
input the user gave: a config value, a path, a data row, the cluster's resources.

Standard library only, importing nothing: every layer may raise these (import-linter leaves
this module outside the layers).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user must fix; the message says what and where."""


class UserPathError(UserError, FileNotFoundError):
    """A file or folder the user named is missing or is not what it should be."""


class UserValueError(UserError, ValueError):
    """A value the user gave (config key, CLI argument, data row) is not acceptable."""


def message_of(e: BaseException) -> str:
    """The message to print for a user error, also when it was raised in a Ray task or actor
    (Ray re-raises it as a subclass of both its RayTaskError and the original class)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
        e = cause
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e)
