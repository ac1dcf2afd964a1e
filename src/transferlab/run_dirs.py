"""Where the runs are: the one walk that finds run and sweep-job directories under a folder.

A run dir is a folder a run wrote into: it holds Hydra's `.hydra/`, train.py's `metrics.json` or
Lightning's `checkpoints/`. The sweep tools (job dirs of one sweep), the report (every record
under the folders it is given) and resume (`ckpt_path=last`, `auto_resume`: the runs of one task,
newest first) all find them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from transferlab.record import METRICS_FILE

HYDRA_DIR = ".hydra"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class RunDir:
    path: Path
    hydra: bool  # holds Hydra's .hydra/ (the job's config and overrides)
    metrics: bool  # holds a metrics.json


def find_run_dirs(root: str | Path, inside: bool = False) -> Iterator[RunDir]:
    """Every run dir under `root` (itself included), top-down, each folder's subfolders by name.
    Hidden folders (.hydra itself, .device_pool, .submitit) are never descended into; nor, unless
    `inside`, is a run dir: its subfolders are its own, not runs (the report looks inside, for a
    metrics.json kept below its job dir)."""
    for dirpath, dirnames, filenames in os.walk(root):
        hydra, metrics = HYDRA_DIR in dirnames, METRICS_FILE in filenames
        if hydra or metrics or CHECKPOINTS_DIR in dirnames:
            yield RunDir(Path(dirpath), hydra, metrics)
            if not inside:
                dirnames[:] = []
                continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))


def task_run_dirs(log_dir: str | Path, task_name: str | None = None) -> list[Path]:
    """The run dirs of a task under `log_dir` (of every task when None), newest first: its single
    runs (`<task>/runs/<time>`) and its sweeps' jobs (`<task>/multiruns/<time>/<job>`), ordered by
    the time their name starts with, then by job."""
    log_dir = Path(log_dir)
    roots = [log_dir / task_name] if task_name is not None else sorted(p for p in log_dir.glob("*") if p.is_dir())
    found: list[tuple[tuple[str, str], Path]] = []
    for root in roots:
        found += [((d.path.name, d.path.name), d.path) for d in find_run_dirs(root / "runs") if d.path != root / "runs"]
    for root in roots:
        for d in find_run_dirs(root / "multiruns"):
            parts = d.path.relative_to(root / "multiruns").parts
            if len(parts) >= 2:  # a job inside a sweep dir, not the sweep dir itself
                found.append(((parts[0], "/".join(parts[1:])), d.path))
    return [path for _, path in sorted(found, key=lambda item: item[0], reverse=True)]
