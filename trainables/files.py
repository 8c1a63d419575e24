"""Atomic local writes: readers see the old file or the new one, never half of either, whatever kills us."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it, racing other threads' file creation)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: bytes | Callable[[IO[bytes]], object], *, private: bool = False) -> None:
    """Write ``data`` (bytes, or a function that writes to a binary file) to a temporary file, then rename it.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), so a colleague the umask lets read
    it can; ``mkstemp`` alone makes it 0600. ``private`` keeps it 0600, for a token or a credential.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if not private:
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What a sweep trial's checkpoint directory holds: the full trial state, and every epoch's metrics so far.
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
