"""Whether a report may link a file: a link must resolve for whoever reads the report where it lies.

A report committed into the repository (docs/results/) is read in a clone, where the runs' folders
under the git-ignored logs/ do not exist; a link there is a dead link. Outside a git work tree (a
report next to its runs on the machine that ran them) any existing file may be linked.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=None)
def work_tree(folder: str) -> Path | None:
    """The top of the git work tree holding `folder`, or None where there is none (or no git)."""
    out = _git(Path(folder), "rev-parse", "--show-toplevel")
    return Path(out.stdout.strip()).resolve() if out is not None and out.returncode == 0 and out.stdout.strip() else None


def linkable(target: str | Path, out_dir: str | Path) -> bool:
    """Whether a report written into `out_dir` may link `target` (absolute, or relative to the
    current directory): it exists, and where `out_dir` is inside a git work tree, it lies in that
    tree and git does not ignore it."""
    path = Path(target).resolve()
    if not path.exists():
        return False
    top = work_tree(str(Path(out_dir).resolve()))
    if top is None:
        return True
    if not path.is_relative_to(top):
        return False
    ignored = _git(top, "check-ignore", "-q", "--", str(path.relative_to(top)))
    # Exit status 0: ignored; 1: not ignored; anything else (no git): nothing known against it.
    return ignored is None or ignored.returncode != 0


def run_name(picture: str) -> str:
    """The run a file of a run folder belongs to, as the log dir names it: `<task>/runs/<time>` or
    `<task>/multiruns/<time>/<job>` (the folder's own name where the path has neither)."""
    parts = Path(picture).parent.parts
    marks = [i for i, p in enumerate(parts) if p in ("runs", "multiruns")]
    if not marks or marks[-1] == 0:
        return parts[-1] if parts else str(picture)
    return "/".join(parts[marks[-1] - 1:])
