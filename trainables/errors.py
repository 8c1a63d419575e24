"""The one class of error that is the user's to fix, and how its messages quote what the user gave."""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring = _REPR.maxother = 60
LIMIT = 80  # characters of a quoted value, at most


def quoted(value: Any) -> str:
    """A value as a message shows it: its repr, cut to about 80 characters, computed without building the whole
    repr, so that a nest of shared references (YAML's "billion laughs") costs no more than a small value.

    A long number or string keeps its ends and says how long it is (``12345678901234567890...12345678 (400
    characters)``); a container shows its first items and depth (``[[1, 2, 3, 4, ...], ...]``).
    """
    if isinstance(value, (str, bytes, int, float)) and not isinstance(value, bool):
        try:
            text = repr(value)
        except ValueError:  # an integer past Python's 4300-digit conversion limit
            return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
        return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"
    text = _REPR.repr(value)
    return text if len(text) <= LIMIT else f"{text[: LIMIT - 3]}..."


class UserError(ValueError):
    """Something the user asked for (a setting, a file, a path, a resource) that cannot be done as asked.

    The CLI shows it as one line with exit status 2, so its message names the problem and the fix. It is a
    ValueError, so code that validates a config still raises what callers expect; but only this class counts as the
    user's: a plain ValueError from deep inside training is a bug and is reported as one.
    """


def did_you_mean(word: Any, choices: Any) -> str:
    """`` (did you mean 'hard'?)`` for a misspelt name close to one of ``choices``, else ''."""
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
