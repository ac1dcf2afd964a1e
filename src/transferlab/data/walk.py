"""Walking a folder tree as a data set: everything under the root, each file once, nothing else.

Links are followed only to folders and files inside the root that are not above the link, and a
file or folder reached by a second path counts once. Hidden entries are never data. Links that
loop, lead out of the root or lead nowhere, entries that are not regular files and folders that
cannot be listed are skipped, each recorded with its reason, so the caller can tell the user.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_NOT_DATA_DIRS = frozenset({"__MACOSX"})  # what macOS zips carry beside the data: AppleDouble ._ files

# Why a walk skips an entry: (one, many, what the user can do).
LOOP, OUTSIDE, BROKEN, SPECIAL, UNLISTED = "loop", "outside", "broken", "special", "unlisted"
SKIP_TEXT = {
    LOOP: ("link that loops back to a folder above it", "links that loop back to a folder above them",
           "they lead to folders walked already; remove them to silence this"),
    OUTSIDE: ("link that points outside the root", "links that point outside the root",
              "copy what they point to into the root (cp -rL) to use it"),
    BROKEN: ("broken link", "broken links", "fix or remove them"),
    SPECIAL: ("entry that is not a regular file", "entries that are not regular files", "remove them"),
    UNLISTED: ("folder that cannot be listed", "folders that cannot be listed", "check their permissions"),
}

Skipped = dict[str, list[Path]]  # reason -> paths, in the order the walk met them


def _visible(name: str) -> bool:
    # Hidden entries (.DS_Store, AppleDouble ._x.jpg, .ipynb_checkpoints) are never data.
    return not name.startswith(".") and name not in _NOT_DATA_DIRS


@dataclass(frozen=True)
class Folder:
    path: Path  # as the user names it (under the root as given)
    real: str  # every link resolved


@dataclass
class Walked:
    """What one walk reached, and what it skipped."""

    files: list[Path] = field(default_factory=list)  # visible regular files, in walk order
    skipped: Skipped = field(default_factory=lambda: defaultdict(list))
    repeats: int = 0  # files and folders reached by a second path, counted once


def _inside(real: str, root: str) -> bool:
    return os.path.commonpath([real, root]) == root


def _is_above(target: str, here: str, descent: tuple[str, ...]) -> bool:
    """Whether a link in ``here`` to folder ``target`` leads back up: to ``here``, a folder that holds
    it, or one the walk came through (a cycle of links that no single folder contains)."""
    return target in descent or _inside(here, target)


def _kind(entry: os.DirEntry, here: str, root: str, descent: tuple[str, ...]) -> tuple[str, str]:
    """(``"dir"``, ``"file"`` or why it is skipped; its real path) for one entry of folder ``here``."""
    if not entry.is_symlink():
        real = os.path.join(here, entry.name)
        if entry.is_dir(follow_symlinks=False):
            return "dir", real
        return ("file" if entry.is_file(follow_symlinks=False) else SPECIAL), real
    real = os.path.realpath(entry.path)
    if not os.path.exists(real):  # a missing target, or a cycle of links that never reaches one
        return BROKEN, real
    if not _inside(real, root):
        return OUTSIDE, real
    if os.path.isdir(real):
        return (LOOP if _is_above(real, here, descent) else "dir"), real
    # A FIFO named like an image would block the loader forever, so only regular files are read.
    return ("file" if os.path.isfile(real) else SPECIAL), real


def _entries(folder: Folder, root: str, descent: tuple[str, ...], skipped: Skipped) -> list[tuple[Path, str, str]]:
    """(path, ``"dir"``, ``"file"`` or why it is skipped, real path) for each visible entry of
    ``folder``, by name; none for a folder that cannot be listed, which goes into ``skipped``."""
    try:
        with os.scandir(folder.path) as it:
            entries = sorted((e for e in it if _visible(e.name)), key=lambda e: e.name)
    except OSError:
        skipped[UNLISTED].append(folder.path)
        return []
    return [(folder.path / e.name, *_kind(e, folder.real, root, descent)) for e in entries]


def _walk(folder: Folder, root: str, found: Walked, seen: set[str], descent: tuple[str, ...]) -> None:
    """Files of ``folder`` (sorted), then its sub-folders depth first, as os.walk orders them."""
    below = []
    for path, kind, real in _entries(folder, root, descent, found.skipped):
        if kind not in ("dir", "file"):
            found.skipped[kind].append(path)
        elif real in seen:
            found.repeats += 1
        elif kind == "dir":
            seen.add(real)
            below.append(Folder(path, real))
        else:
            seen.add(real)
            found.files.append(path)
    for sub in below:
        _walk(sub, root, found, seen, descent + (sub.real,))


def walk_files(top: Folder, root: str) -> Walked:
    """Every file under ``top``, each counted once within this walk; ``root`` is the real path
    nothing may lead out of."""
    found = Walked()
    _walk(top, root, found, {top.real}, (top.real,))
    return found


def subfolders(folder: Folder, root: str) -> tuple[dict[str, Folder], Skipped]:
    """The visible folders in ``folder`` that may be walked, by name; and the links it skips, by why."""
    skipped: Skipped = defaultdict(list)
    dirs = {}
    for path, kind, real in _entries(folder, root, (folder.real,), skipped):
        if kind == "dir":
            dirs[path.name] = Folder(path, real)
        elif kind in (LOOP, BROKEN) or (kind == OUTSIDE and os.path.isdir(real)):  # loose files: ignored
            skipped[kind].append(path)
    return dirs, skipped


def has_visible_subfolders(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(_visible(e.name) and e.is_dir() for e in it)
    except OSError:
        return False
