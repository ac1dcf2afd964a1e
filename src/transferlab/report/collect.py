"""Walk run and sweep directories into one table row per job.

A job is a directory with a ``metrics.json`` (read through `RunRecord`) or a Hydra job dir (one
with ``.hydra/``) without one: a sweep may still be running or have crashed, and such a job is
listed as unfinished, named by its ``.hydra/overrides.yaml``. A metrics.json that cannot be read
is a failed row saying why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from transferlab.config.overrides import parse_all, read_overrides
from transferlab.config.tuning import SEARCH_ARM
from transferlab.errors import TransferlabError
from transferlab.record import FAILED, METRICS_FILE, RecordError, RunRecord
from transferlab.report.experiments import identify, run_time
from transferlab.run_dirs import HYDRA_DIR, find_run_dirs

UNFINISHED = "unfinished"
UNFINISHED_ERROR = f"no {METRICS_FILE}: failed before writing it, killed, or still running"
# Columns the CSV starts with; the recorded metrics follow, then everything else, then LAST.
FIRST = ("sweep", "job", "status", "model", "data", "strategy", "strategy_name", "variant", "size",
         "size_x", "samples_per_class", "train_fraction", "train_size", "seed", "code", "env")
LAST = ("duplicate_of", "error", "overrides", "run_dir", "job_dir")
# Config keys a job that never wrote its record can be grouped by, read from its overrides.
OVERRIDE_KEYS = ("model", "data", "strategy", "samples_per_class", "train_fraction", "train_size", "seed")
METRIC_PREFIXES = ("test", "val", "params", "time")
# A record's confusion matrix stays whole in this column for per-class recall; a matrix of many
# classes is no CSV cell, so the CSV gets the picture's path (CONFUSION_PNG) instead.
CONFUSION, CONFUSION_PNG = "confusion", "confusion_png"
# The reliability tables and per-class rows are many numbers a run: the CSV gets the test
# diagram's path, and the split-level ECE, NLL and Brier are already among test.* and val.*.
RELIABILITY, RELIABILITY_PNG, PER_CLASS = "reliability", "reliability_png", "per_class"
# Columns for the report's own use, not written to results.csv.
IN_MEMORY = ("mtime", CONFUSION)


class NoRunsError(TransferlabError, FileNotFoundError):
    """Nothing to report under the directories given."""


def collect(dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per job found under ``dirs`` (each job once, even if dirs nest or repeat), with the
    row labels and duplicate marks of experiments.identify()."""
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for d in dirs:
        root = Path(d).resolve()
        metrics_paths, job_dirs = _walk(root)
        for path in metrics_paths:
            job_dir = _job_dir_of(path, root)
            if path in seen:
                continue
            seen.update({path, job_dir})
            rows.append(_row_from_record(path, root, job_dir))
        for job_dir in job_dirs:
            if job_dir not in seen:
                seen.add(job_dir)
                rows.append(_row_unfinished(job_dir, root))
    rows = _without_search_trials(_without_reused_copies(rows))
    if not rows:
        return pd.DataFrame(columns=[*FIRST, *LAST])
    return identify(_ordered(pd.DataFrame(rows)))


def code_label(provenance: dict | None) -> str:
    """The code a run came from: a short commit, "+dirty" for uncommitted edits, "unknown" for
    records from before provenance was recorded."""
    code = (provenance or {}).get("code") or {}
    commit = code.get("commit") if isinstance(code, dict) else None
    if not commit:
        return "unknown"
    return str(commit)[:7] + ("+dirty" if code.get("dirty") else "")


def env_label(provenance: dict | None) -> str:
    """The environment a run came from: the first 12 hex digits of the lock file's digest, with
    "+drift" where installed versions differed from the lock; "unlocked" for a run without a lock
    file, "unknown" for records from before the environment was recorded."""
    env = (provenance or {}).get("environment")
    if not isinstance(env, dict):
        return "unknown"
    lock = env.get("lock")
    if not lock:
        return "unlocked"
    return str(lock).split(":", 1)[-1][:12] + ("+drift" if env.get("lock_differs") else "")


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """metrics.json files and Hydra job dirs under root, also inside job dirs."""
    found = list(find_run_dirs(root, inside=True))
    return [d.path / METRICS_FILE for d in found if d.metrics], [d.path for d in found if d.hydra]


def _job_dir_of(metrics_path: Path, root: Path) -> Path:
    # metrics.json may sit below the Hydra job dir (e.g. beside checkpoints): the job is the
    # nearest ancestor with a .hydra folder.
    for d in [metrics_path.parent, *metrics_path.parent.parents]:
        if (d / HYDRA_DIR).is_dir():
            return d
        if d == root:
            break
    return metrics_path.parent


def _where(job_dir: Path, root: Path, metrics_path: Path | None) -> dict[str, Any]:
    rel = os.path.relpath(job_dir, root)
    mtime = metrics_path.stat().st_mtime if metrics_path is not None and metrics_path.exists() else None
    started = run_time(job_dir, metrics_path)
    return {"sweep": str(root), "job": rel, "job_dir": str(job_dir), "mtime": mtime,
            "run_time": started.isoformat() if started else None}


def _config_from_overrides(overrides: list[str]) -> dict[str, Any]:
    """Best guess at the grouping keys of a job that never wrote its config."""
    return {o.leaf: o.scalar() for o in parse_all(overrides) if o.value is not None and o.leaf in OVERRIDE_KEYS}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value, default=str)
    else:
        out[prefix] = value


def _row_from_record(path: Path, root: Path, job_dir: Path) -> dict[str, Any]:
    row = _where(job_dir, root, path)
    try:
        record = RunRecord.read(path)
    except (RecordError, TypeError, ValueError) as e:  # a run still writing, a crash mid-write
        overrides = read_overrides(job_dir) or []
        reason = e.__cause__ if isinstance(e, RecordError) and e.__cause__ is not None else e
        row.update(_config_from_overrides(overrides))
        row.update(status=FAILED, error=f"unreadable {METRICS_FILE}: {reason}", overrides=" ".join(overrides))
        return row

    data = record.to_dict()
    confusion = data.pop(CONFUSION, None)
    if isinstance(confusion, dict):
        row[CONFUSION] = confusion
    row.update(_picture_column(confusion, path.parent, CONFUSION_PNG))
    row.update(_picture_column(data.pop(RELIABILITY, None), path.parent, RELIABILITY_PNG))
    data.pop(PER_CLASS, None)
    # Config values are the grouping keys, so they get plain column names.
    for k, v in data.pop("config").items():
        _flatten(k if k not in row and k not in data else f"config.{k}", v, row)
    overrides = data.pop("overrides") or read_overrides(job_dir) or []
    for k, v in data.items():
        _flatten(k, v, row)
    row["overrides"] = " ".join(str(o) for o in overrides)
    for k, v in _config_from_overrides([str(o) for o in overrides]).items():
        if row.get(k) is None:
            row[k] = v
    row["status"] = str(record.status) if record.status else "unknown"
    row["code"] = code_label(record.provenance)
    row["env"] = env_label(record.provenance)
    return row


def _picture_column(entry: Any, run_dir: Path, column: str) -> dict[str, Any]:
    """{column: the picture's path} where the record's entry names one that is there (it lies beside
    metrics.json, so a moved run dir still finds it); records before schema 3 or 4 have none."""
    picture = entry.get("picture") if isinstance(entry, dict) else None
    if isinstance(picture, str) and picture and (run_dir / picture).is_file():
        return {column: str(run_dir / picture)}
    return {}


def _row_unfinished(job_dir: Path, root: Path) -> dict[str, Any]:
    overrides = read_overrides(job_dir) or []
    row = {**_where(job_dir, root, None), "status": UNFINISHED, "error": UNFINISHED_ERROR,
           "overrides": " ".join(overrides)}
    row.update(_config_from_overrides(overrides))
    return row


def _without_search_trials(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A tuned comparison's trials were never tested (their settings are in its tuning.md); the
    # report's rows are its default and tuned arms.
    return [r for r in rows if r.get("tune_arm") != SEARCH_ARM]


def _without_reused_copies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # auto_resume copies a finished job's record into the relaunched sweep; with both sweeps in the
    # report, the job counts once, as the original.
    here = {str(Path(r["job_dir"]).resolve()) for r in rows}
    return [r for r in rows
            if not (isinstance(r.get("reused_from"), str) and str(Path(r["reused_from"]).resolve()) in here)]


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    metric_cols = sorted(c for c in df.columns if c.split(".")[0] in METRIC_PREFIXES)
    for c in (*FIRST, *LAST):
        if c not in df.columns:
            df[c] = None
    rest = [c for c in df.columns if c not in (*FIRST, *metric_cols, *LAST)]
    # Nullable dtypes keep integer columns (sizes, seeds, parameter counts) integers in the CSV
    # when some jobs lack them.
    df = df[[*FIRST, *metric_cols, *rest, *LAST]].convert_dtypes()
    return df.sort_values(["sweep", "job"], kind="stable").reset_index(drop=True)
