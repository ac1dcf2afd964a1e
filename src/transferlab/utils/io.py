"""Run files, written so they are never seen half-written (metrics.json, caches): temp file + rename."""

from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_NAME_TRIES = 100


def _create_temp_beside(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, open for writing, with the mode `open(path, "w")` would give it."""
    for _ in range(_NAME_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # 0o666 through the kernel, which applies the umask (or the folder's default ACL) as it
            # does for a plain open(); tempfile.mkstemp's 0600 left run files unreadable to a team.
            return os.open(tmp, _NEW_FILE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path.name}", str(path.parent))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """`write(f)` into a temp file beside `path`, synced, then renamed over `path`.

    The file gets the mode of a new file under the current umask, also when it replaces one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())
