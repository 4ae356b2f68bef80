"""The one exception type that carries a user-facing message."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: the message is one line that names the problem and the fix.

    The CLI prints it without a traceback and exits with status 2.
    """
