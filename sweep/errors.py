"""What the CLI makes of an exception, and the driver's log file.

Three kinds, one rule (:func:`sweep.cli.main` applies it):

- the user's mistake, :class:`~trainables.errors.UserError`: one line with the fix, exit 2;
- the storage failing (cannot create, permission, no space, endpoint unreachable): one line naming the path and the
  cause, exit 2 (nothing the driver wrote is lost; ``sweep resume`` goes on once the storage is fixed);
- anything else is a bug: one line that says so and where the traceback was written, exit 1.

The log file also takes what Ray and Python warn about on the way (see :func:`attach`): none of it is the user's
business on a healthy run, all of it is what a bug report needs.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import time
import traceback
from pathlib import Path

LOG_FILE = "driver.log"

# errno values that mean "the storage cannot take this write", whatever raised them.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
                   errno.EISDIR, errno.ENAMETOOLONG, errno.EEXIST, errno.EIO}
# The same faults as they read in a message that crossed a process boundary (a trial's error file, SQLite's text).
_FULL = re.compile(r"No space left on device|\[Errno 28\]|Disk quota exceeded|\[Errno 122\]|database or disk is full"
                   r"|Read-only file system|\[Errno 30\]")


class StorageFault(OSError):
    """The storage failed under a running sweep (a trial could not write its checkpoint, the driver its record)."""


class _QuietFileHandler(logging.FileHandler):
    """A log on a full disk loses lines; it never prints logging's own traceback on the terminal instead."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _Where:
    """Where this process's log goes, once a command knows its sweep."""

    path: Path | None = None
    handler: logging.Handler | None = None
    resume: str = ""  # the command that continues the sweep once the storage is fixed, when there is a sweep


def resume_with(command: str) -> None:
    """Say how to continue: the storage-fault line of :func:`sweep.cli.main` ends with it."""
    _Where.resume = command


def resume_command() -> str:
    return _Where.resume


def attach(exp: str, name: str) -> Path:
    """Send Ray's and Python's warnings from now on to the sweep's log file (``<sweep>/driver.log``, or a local file
    in the temporary directory when the sweep lives in object storage) instead of the terminal."""
    from sweep.storage import is_uri

    label = re.sub(r"[^A-Za-z0-9._-]+", "-", name)[-100:]
    path = Path(tempfile.gettempdir()) / f"sweep-{label}-{LOG_FILE}" if is_uri(exp) else Path(exp) / LOG_FILE
    if _Where.path != path:
        detach()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _QuietFileHandler(path, encoding="utf-8", delay=True)  # no file until there is a line
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        _Where.path, _Where.handler = path, handler
    for logger_name in ("ray", "py.warnings"):  # again after ray.init, which adds its terminal handler anew
        logger = logging.getLogger(logger_name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
        if _Where.handler not in logger.handlers:
            logger.addHandler(_Where.handler)
        logger.propagate = False
    logging.captureWarnings(True)
    return path


def detach() -> None:
    if _Where.handler is not None:
        for logger_name in ("ray", "py.warnings"):
            logging.getLogger(logger_name).removeHandler(_Where.handler)
        _Where.handler.close()
    _Where.path, _Where.handler = None, None


def storage_problem(exc: BaseException) -> str | None:
    """One line for a storage failure anywhere in ``exc``'s chain (an OSError, or SQLite saying the disk is full),
    else None. Ray re-raises a worker's OSError as a subclass of it, so those are found too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return _describe_os_error(exc)
        found = _FULL.search(str(exc))
        if found:
            return f"the storage is full or read-only ({found.group(0)})"
        exc = exc.__cause__ or exc.__context__
    return None


def _describe_os_error(exc: OSError) -> str:
    text = str(exc).strip()
    cause = exc.strerror or (text.splitlines()[0] if text else type(exc).__name__)
    if not exc.filename:
        return cause
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return f"cannot write {where}: {cause}" if exc.errno in _STORAGE_ERRNOS else f"{where}: {cause}"


def is_storage_fault(message: str) -> bool:
    """Whether a trial's error (its last line, as the worker raised it) is the storage failing, not the trial."""
    return bool(_FULL.search(message))


def write_bug(exc: BaseException, argv: list[str]) -> Path:
    """Append the full traceback to the log file (a new file in the temporary directory when no sweep has one)."""
    path = _Where.path
    text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} bug in `sweep {' '.join(argv)}`\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        if path is None:
            raise OSError
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        fd, tmp = tempfile.mkstemp(prefix="sweep-bug-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        path = Path(tmp)
    return path

