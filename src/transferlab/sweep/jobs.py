"""The job directories of a multirun: the folders under its sweep dir that a job ran in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from transferlab.record import METRICS_FILE

HYDRA_DIR = ".hydra"


def _walk(sweep_dir: Path) -> Iterator[Path]:
    # A job dir holds Hydra's .hydra/ or, with hydra.output_subdir=null, only train.py's record.
    # Hidden folders (.device_pool, .submitit) and a job's own subfolders hold no jobs.
    for dirpath, dirnames, filenames in os.walk(sweep_dir):
        if HYDRA_DIR in dirnames or METRICS_FILE in filenames:
            yield Path(dirpath)
            dirnames[:] = []
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]


def _job_order(job_dir: Path, sweep_dir: Path) -> tuple:
    parts = job_dir.relative_to(sweep_dir).parts
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every job dir under `sweep_dir`, in job order (numbered dirs by number, then by name)."""
    sweep_dir = Path(sweep_dir)
    return sorted(_walk(sweep_dir), key=lambda d: _job_order(d, sweep_dir))


def any_job_dir(sweep_dir: str | Path) -> Path | None:
    """One job dir under `sweep_dir`, or None; stops at the first it finds."""
    return next(_walk(Path(sweep_dir)), None)


def job_name(job_dir: Path, sweep_dir: str | Path) -> str:
    """The job dir relative to the sweep dir ("3"; "." when the sweep dir is the job dir)."""
    return str(Path(job_dir).relative_to(sweep_dir))
