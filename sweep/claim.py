"""One driver per sweep: a claim on the sweep directory, taken atomically before anything is written.

The claim is ``<sweep>/driver.lock``, a small JSON record (pid, host, a random token, when) that a driver creates
when it starts (`sweep run` before it writes ``sweep.json``; `sweep resume` and `sweep confirm` before their
session) and deletes when it ends. On a local filesystem the create is exclusive (``O_CREAT | O_EXCL``): of two
drivers started together exactly one gets it, the other is refused in one line naming the holder. A driver killed
with SIGKILL leaves its claim behind; it is *stale* when its process is gone (same host) or when no heartbeat of its
sweep (``driver.json``, the sweep's or its race's, written every few seconds) is younger than
:data:`sweep.ledger.HEARTBEAT_STALE_S`. A stale claim is taken over by renaming it aside first, so of two drivers
taking it over together one wins.

Object storage has no exclusive create here (pyarrow writes objects unconditionally), so there the claim is a lease
checked twice: write it with a random token, wait, read it back, and again after :data:`SETTLE_S`; a driver that
does not find its own token both times backs off. Two drivers started within a few milliseconds of each other can
still both win on an object store; on a local or network filesystem they cannot.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyarrow.fs as pafs

from sweep import ledger
from sweep.storage import is_uri, join, read_text, write_atomic
from trainables.errors import UserError

LOCK_FILE = "driver.lock"
SETTLE_S = 1.5  # object storage: the wait between writing a claim and trusting it

_held: dict[str, str] = {}  # sweep directory -> this process's token: a pipeline's later stages hold the same claim


class Claimed(UserError):
    """Another driver holds the sweep."""


def _started(pid: int) -> str:
    """When process ``pid`` started (Linux: clock ticks since boot, field 22 of /proc/PID/stat), '' where unknown:
    a claim names its process by pid and start, so a pid reused by another process is not taken for the driver."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _record() -> dict[str, Any]:
    return {"pid": os.getpid(), "started": _started(os.getpid()), "host": socket.gethostname(),
            "token": secrets.token_hex(8), "since": time.time()}


def read_claim(exp: str) -> dict[str, Any] | None:
    """The claim on ``exp``, or None; an unreadable claim reads as a dead driver's (it is stale)."""
    text = read_text(join(exp, LOCK_FILE))
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {"pid": -1, "host": "", "token": "", "since": 0.0}
    return record if isinstance(record, dict) else {"pid": -1, "host": "", "token": "", "since": 0.0}


def is_stale(exp: str, record: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether the claim's driver is gone: its process has ended (same host), or nothing has kept the sweep's
    heartbeat fresh for :data:`~sweep.ledger.HEARTBEAT_STALE_S` since the claim was taken."""
    now = time.time() if now is None else now
    if record.get("host") == socket.gethostname():
        try:
            pid = int(record.get("pid", -1))
            if pid <= 0:  # an unreadable claim (os.kill(-1, 0) would signal every process)
                return True
            os.kill(pid, 0)
        except (ProcessLookupError, ValueError, OverflowError, TypeError):
            return True
        except PermissionError:
            pass  # another user's live process
        started = record.get("started") or ""
        return bool(started) and _started(pid) not in ("", started)  # the pid now names another process
    beats = [float(record.get("since") or 0.0)]
    for where in (exp, join(exp, "confirm")):
        for session in ledger.read_driver(where, strict=False).get("sessions", []):
            beats.append(float(session.get("heartbeat") or 0.0))
    return now - max(beats) > ledger.HEARTBEAT_STALE_S


def holder(record: Mapping[str, Any]) -> str:
    return f"driver pid {record.get('pid')} on {record.get('host') or 'an unknown host'}"


@contextmanager
def claim(exp: str, *, creating: bool = False) -> Iterator[None]:
    """Hold the sweep in ``exp`` for this driver while the block runs; :class:`Claimed` (one line) when another live
    driver holds it. ``creating``: `sweep run`, for which any claim found is another driver's new sweep."""
    if exp in _held:  # a later stage of this process's own pipeline
        yield
        return
    record = _record()
    made = not is_uri(exp) and not os.path.isdir(exp)
    _take(exp, record, creating)
    _held[exp] = record["token"]
    try:
        yield
    finally:
        _held.pop(exp, None)
        _release(exp, record["token"])
        if made:  # a sweep refused before it wrote anything leaves no empty folder behind
            try:
                os.rmdir(exp)
            except OSError:
                pass  # not empty: the sweep's files


def _take(exp: str, record: dict[str, Any], creating: bool) -> None:
    for _ in range(3):  # a claim that vanishes while being looked at: look again
        found = read_claim(exp)
        if found is not None:
            if creating or not is_stale(exp, found):
                verb = "is being created by" if creating else "is held by"
                raise Claimed(f"sweep {exp} {verb} another {holder(found)}; wait for it to finish, or follow it with "
                              "`sweep status`")
            if not _set_aside(exp):
                continue  # another driver took the stale claim over first
        if _create(exp, record):
            return
    found = read_claim(exp) or {}
    raise Claimed(f"sweep {exp} is held by another {holder(found)}; wait for it to finish")


def _create(exp: str, record: dict[str, Any]) -> bool:
    """Create the claim if there is none; whether this driver now holds it."""
    path, data = join(exp, LOCK_FILE), json.dumps(record).encode()
    if not is_uri(exp):
        os.makedirs(exp, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies, as for every file
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    if read_claim(exp) is not None:
        return False
    write_atomic(path, data)
    for _ in range(2):
        time.sleep(SETTLE_S)
        if (read_claim(exp) or {}).get("token") != record["token"]:
            return False
    return True


def _set_aside(exp: str) -> bool:
    """Move a stale claim out of the way; False when another driver moved it first."""
    path = join(exp, LOCK_FILE)
    if not is_uri(exp):
        try:
            os.replace(path, f"{path}.stale-{secrets.token_hex(4)}")
        except FileNotFoundError:
            return False
        for name in os.listdir(exp):  # the claim set aside is no longer needed
            if name.startswith(f"{LOCK_FILE}.stale-"):
                try:
                    os.unlink(os.path.join(exp, name))
                except FileNotFoundError:
                    pass
        return True
    fs, base = pafs.FileSystem.from_uri(path)
    try:
        fs.delete_file(base)
    except FileNotFoundError:
        return False
    return True


def _release(exp: str, token: str) -> None:
    """Delete the claim if it is still this driver's."""
    if (read_claim(exp) or {}).get("token") != token:
        return
    path = join(exp, LOCK_FILE)
    try:
        if is_uri(exp):
            fs, base = pafs.FileSystem.from_uri(path)
            fs.delete_file(base)
        else:
            os.unlink(path)
    except (FileNotFoundError, OSError):
        pass  # a storage that fails now leaves a claim the next driver finds stale
