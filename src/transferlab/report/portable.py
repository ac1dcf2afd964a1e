"""Paths in the written report relative to its own folder, so a committed report holds no absolute
paths of the machine that ran it and still points at the runs from where it lies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.report.columns import is_missing

PATH_COLUMNS = ("sweep", "job_dir", "run_dir", "best_checkpoint", "resumed_from", "reused_from",
                "feature_cache.dir", "duplicate_of", "confusion_png", "reliability_png",
                "calibration.checkpoint")


def relative(path: Any, out_dir: str | Path) -> Any:
    """`path` relative to `out_dir`; relative paths in records are read from the current directory,
    as train.py wrote them. Non-paths (missing values) are returned as they are."""
    if is_missing(path) or not isinstance(path, str) or not path:
        return path
    try:
        return os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())
    except ValueError:  # another drive on Windows: no relative path exists
        return path


def portable(jobs: pd.DataFrame, out_dir: str | Path) -> pd.DataFrame:
    jobs = jobs.copy()
    for col in PATH_COLUMNS:
        if col in jobs.columns:
            jobs[col] = jobs[col].astype(object).map(lambda p: relative(p, out_dir))
    return jobs
