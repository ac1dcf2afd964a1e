"""The job directories of a multirun: the run dirs under its sweep dir (run_dirs.py), in job order."""

from __future__ import annotations

from pathlib import Path

from transferlab.run_dirs import find_run_dirs


def _job_order(job_dir: Path, sweep_dir: Path) -> tuple:
    parts = job_dir.relative_to(sweep_dir).parts
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every job dir under `sweep_dir`, in job order (numbered dirs by number, then by name)."""
    sweep_dir = Path(sweep_dir)
    return sorted((d.path for d in find_run_dirs(sweep_dir)), key=lambda d: _job_order(d, sweep_dir))


def any_job_dir(sweep_dir: str | Path) -> Path | None:
    """One job dir under `sweep_dir`, or None; stops at the first it finds."""
    return next((d.path for d in find_run_dirs(sweep_dir)), None)


def job_name(job_dir: Path, sweep_dir: str | Path) -> str:
    """The job dir relative to the sweep dir ("3"; "." when the sweep dir is the job dir)."""
    return str(Path(job_dir).relative_to(sweep_dir))
