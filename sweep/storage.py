"""Where a sweep lives: a local directory (default ./sweeps) or any URI pyarrow's filesystems take (s3://, gs://).

Everything the sweep writes itself goes through :func:`write_atomic`: a temporary file, then a rename, so a kill
never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import shlex
import urllib.parse
from pathlib import Path

import pyarrow.fs as pafs

from trainables.errors import UserError
from trainables.files import write_atomic as local_write_atomic

DEFAULT_STORAGE = "./sweeps"


def is_uri(path: str) -> bool:
    return "://" in path


# URI query keys that carry a secret (pyarrow's S3 and GCS options): such a URI would be written into sweep.json and
# printed in every command the CLI suggests.
_SECRET_KEYS = ("access_key", "secret_key", "session_token", "access_token", "password", "credential")


def resolve_storage(storage: str) -> str:
    """An absolute local path (Ray needs one) or the URI unchanged; a URI that carries a credential is refused."""
    if not is_uri(storage):
        return str(Path(storage).expanduser().resolve())
    parts = urllib.parse.urlsplit(storage)
    keys = [k for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if any(word in k.lower() for word in _SECRET_KEYS)]
    if keys or parts.password:
        what = f"`{keys[0]}=`" if keys else "a password"
        raise UserError(f"the storage URI carries a credential ({what}), which would be written into the sweep and "
                        "printed in its commands; give it through the environment (AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY) or ~/.aws instead")
    return storage


def command(verb: str, name: str, storage: str) -> str:
    """``sweep VERB NAME [--storage X]``, quoted so that it can be pasted into a shell as it is printed."""
    resolved = resolve_storage(storage)
    where = [] if resolved == resolve_storage(DEFAULT_STORAGE) else ["--storage", resolved]
    return shlex.join(["sweep", verb, name, *where])


def check_writable(path: str, flag: str) -> None:
    """A local directory that must be creatable and writable, checked without creating anything; a URI is tried
    when it is first written (an object store has no permissions to read off beforehand)."""
    if is_uri(path):
        return
    probe = Path(path).expanduser().resolve()
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{flag} {path} is a file, not a directory; choose a directory")
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a directory" if not probe.is_dir() else "is not writable"
        raise UserError(f"cannot write to {flag} {path}: {probe} {what}; choose another {flag}")


def join(base: str, *parts: str) -> str:
    """``base/parts...`` for a path or a URI, keeping a URI's query string (endpoint, region) at the end."""
    if not is_uri(base):
        return str(Path(base).joinpath(*parts))
    head, _, query = base.partition("?")
    return "/".join([head.rstrip("/"), *parts]) + (f"?{query}" if query else "")


def write_atomic(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` (local path or URI) so that readers see the old file or the new one, never half."""
    payload = data.encode() if isinstance(data, str) else data
    if not is_uri(path):
        local_write_atomic(path, payload)
        return
    fs, base = pafs.FileSystem.from_uri(path)
    if isinstance(fs, pafs.LocalFileSystem):  # a file:// URI: its folder must exist
        fs.create_dir(base.rsplit("/", 1)[0], recursive=True)
    # Object stores make a completed upload visible atomically; a local-style rename is not available there.
    with fs.open_output_stream(base) as f:
        f.write(payload)


def read_text(path: str) -> str | None:
    if not is_uri(path):
        p = Path(path)
        return p.read_text() if p.is_file() else None
    fs, base = pafs.FileSystem.from_uri(path)
    if fs.get_file_info(base).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(base) as f:
        return f.read().decode()


def list_names(path: str) -> list[str]:
    """The names directly under a local directory or an object-store prefix ([] when there is nothing there)."""
    if not is_uri(path):
        p = Path(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    fs, base = pafs.FileSystem.from_uri(path)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def remove_tree(path: str) -> None:
    """Delete a local directory or an object-store prefix, and everything under it."""
    if not is_uri(path):
        import shutil

        shutil.rmtree(path)
        return
    fs, base = pafs.FileSystem.from_uri(path)
    fs.delete_dir(base)
