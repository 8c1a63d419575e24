"""The Optuna study of a sweep kept in object storage (``s3://``, ``gs://``, anything pyarrow's filesystems take).

SQLite needs a local file with working locks, which an object store is not. Optuna's journal storage needs only
"append these log entries" and "read the entries from number N on", and an object store does both well if every
append is a new object: ``NNNNNNNNNNNN.json`` holds the entries from number N on. An upload becomes visible whole
or not at all, and list-after-write is consistent (S3, GCS), so a reader sees a prefix of the journal, never a
torn entry; a driver killed mid-upload loses only the entry it was writing, which the checkpoints on storage then
restore (see :func:`sweep.ledger.reconcile`).

One driver writes at a time (``driver.json`` refuses a second live one), so the writer keeps the journal in memory
after its first read and only uploads; readers (``sweep status``, ``sweep report``) list and read. To keep a resume
from reading thousands of small objects, the writer saves a compacted copy, ``cNNNNNNNNNNNN.json`` (every entry
before N), when it opens a long journal; the numbered objects are never deleted, so no reader can race a delete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.fs as pafs
from optuna.storages.journal import BaseJournalBackend

from trainables.errors import UserError

JOURNAL_DIR = "study-journal"
# Compact when opening a journal with more objects than this past the last compaction.
COMPACT_AFTER = 200
_WIDTH = 12


def _name(n: int, compacted: bool = False) -> str:
    return f"{'c' if compacted else ''}{n:0{_WIDTH}d}.json"


class ObjectJournal(BaseJournalBackend):
    """Optuna journal backend over a folder of an object store; ``writer``: this process is the sweep's driver."""

    def __init__(self, uri: str, *, writer: bool = False) -> None:
        self._fs, self._base = pafs.FileSystem.from_uri(uri)
        self._base = self._base.rstrip("/")
        self._writer = writer
        self._logs: list[dict[str, Any]] = []
        self._read_once = False

    # --- BaseJournalBackend ---

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        if not (self._writer and self._read_once):
            self._refresh()
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not (self._writer and self._read_once):
            self._refresh()
        self._put(_name(len(self._logs)), logs)
        self._logs.extend(logs)

    # --- the objects ---

    def exists(self) -> bool:
        numbered, compacted = self._listing()
        return bool(numbered or compacted)

    def _listing(self) -> tuple[dict[int, str], dict[int, str]]:
        """(numbered objects, compacted objects), each by the log number in its name."""
        infos = self._fs.get_file_info(pafs.FileSelector(self._base, allow_not_found=True))
        numbered, compacted = {}, {}
        for info in infos:
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".json"):
                continue
            stem = name[: -len(".json")]
            target = compacted if stem.startswith("c") else numbered
            try:
                target[int(stem.lstrip("c"))] = info.path
            except ValueError:
                continue
        return numbered, compacted

    def _refresh(self) -> None:
        numbered, compacted = self._listing()
        have = len(self._logs)
        base = max((n for n in compacted if n > have), default=None)
        if base is not None:  # a compacted copy ahead of what we hold replaces it
            logs = self._get(compacted[base])
            if len(logs) != base:
                raise UserError(f"study journal {self._base}: compacted copy {_name(base, True)} holds {len(logs)} "
                                 f"entries, not {base}; restore the sweep's storage from a backup")
            self._logs, have = logs, base
        wanted = sorted(n for n in numbered if n >= have)
        with ThreadPoolExecutor(max_workers=16) as pool:  # object stores answer many small reads in parallel
            chunks = list(pool.map(lambda n: self._get(numbered[n]), wanted))
        for n, chunk in zip(wanted, chunks, strict=True):
            if n != len(self._logs):
                raise UserError(f"study journal {self._base}: entries {len(self._logs)}..{n - 1} are missing; "
                                 "restore the sweep's storage from a backup")
            self._logs.extend(chunk)
        self._read_once = True
        if self._writer and len(wanted) > COMPACT_AFTER:
            self._put(_name(len(self._logs), compacted=True), self._logs)

    def _get(self, path: str) -> list[dict[str, Any]]:
        with self._fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def _put(self, name: str, logs: list[dict[str, Any]]) -> None:
        # An object store makes an upload visible only once it is complete: no temporary name needed.
        if isinstance(self._fs, pafs.LocalFileSystem):  # file:// URIs (tests, NFS): folders must exist
            self._fs.create_dir(self._base, recursive=True)
        with self._fs.open_output_stream(f"{self._base}/{name}") as f:
            f.write(json.dumps(logs, separators=(",", ":")).encode())
