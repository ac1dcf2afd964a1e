"""What the caches under `paths.cache_dir` share: keyed files, checked on read, rebuilt when stale.

The feature cache (data/caches/feature_cache.py) and the token cache (data/caches/token_cache.py) store one file
per key, named by the hash of the key's JSON, and keep the JSON inside the file: a hash collision or
a renamed file then reads as "another key", never as the wrong contents. A file that cannot be read,
has another format or holds another key is rebuilt with a warning. Writes go to a temporary name and
are renamed (utils/io.py), so readers never see half a file, and a lock per file makes parallel
sweep jobs (or DDP ranks) wait for one build instead of each doing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

import torch

from transferlab.utils.io import atomic_write

T = TypeVar("T")


class CacheFileError(Exception):
    """A cache file that must be rebuilt; the message says why."""


class JsonKey:
    """A frozen dataclass whose JSON names a cache file's contents: equal JSON, equal contents."""

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def safe_name(text: str) -> str:
    """`text` as one folder name (a hub id's slash, a path's separators)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path` (released by the kernel if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): parallel jobs may build twice, the rename keeps files whole
        yield
        return
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def load_blob(path: Path, format_version: int, key: JsonKey, key_fields: str = "") -> dict:
    """The dict stored at `path` if it is whole, of `format_version` and written for `key`
    (`key_fields` names what a differing key means changed, for the log)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage, another format: all mean "rebuild"
        raise CacheFileError(f"unreadable ({type(e).__name__}: {str(e)[:120]})") from e
    if not isinstance(blob, dict) or blob.get("format") != format_version:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CacheFileError(f"format {found!r}, expected {format_version}")
    if blob.get("key") != key.to_json():
        raise CacheFileError("stored key differs from this run's" + (f" ({key_fields} changed)" if key_fields else ""))
    return blob


def save_blob(path: Path, format_version: int, key: JsonKey, contents: dict) -> None:
    blob = {"format": format_version, "key": key.to_json(), **contents}
    atomic_write(path, lambda f: torch.save(blob, f))


@dataclass
class Cached(Generic[T]):
    value: T
    hit: bool
    stale: str | None = None  # why the file there was rebuilt; None when there was none


def read_or_build(path: Path, read: Callable[[Path], T], build: Callable[[], T], write: Callable[[Path, T], None],
                  log: logging.Logger, what: str) -> Cached[T]:
    """`read(path)`, or else `build()` and `write(path, value)`, under the file's lock.

    `read` raises CacheFileError for a file it cannot trust; that file is logged (as `what`) and
    replaced. Whatever `build` or `write` raise is the caller's.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        stale = None
        if path.exists():
            try:
                return Cached(read(path), hit=True)
            except CacheFileError as e:
                stale = str(e)
                log.warning("%s file %s is stale or corrupt (%s); rebuilding it", what, path, stale)
        value = build()
        write(path, value)
        return Cached(value, hit=False, stale=stale)


@dataclass
class CacheStats:
    """What one run's cache lookups did."""

    hits: int = 0
    built: int = 0  # no file yet
    rebuilt: int = 0  # a stale or corrupt file replaced
    build_s: float = 0.0  # time spent making what was missing (the backbone's features, the tokenizer's ids)
