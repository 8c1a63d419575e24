"""The one class of error that is the user's to fix."""

from __future__ import annotations


class UserError(ValueError):
    """Something the user asked for (a setting, a file, a path, a resource) that cannot be done as asked.

    The CLI shows it as one line with exit status 2, so its message names the problem and the fix. It is a
    ValueError, so code that validates a config still raises what callers expect; but only this class counts as the
    user's: a plain ValueError from deep inside training is a bug and is reported as one.
    """
