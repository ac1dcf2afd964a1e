"""How a multirun ended: one line, and an exit status that says the same.

train.py keeps a sweep going past a failed job (its task returns None and the failure goes into
the job's metrics.json), so Hydra's own exit status is 0 however many jobs failed.
:class:`SweepSummary` (``hydra.callbacks.sweep_summary`` in ``configs/hydra/default.yaml``) reads
every job's record once all jobs have run and

- prints ``sweep: all N jobs completed ...`` when every one completed (exit status 0), or
- prints ``error: K of N jobs failed: <job> (<error>), ...; see <job dir>/metrics.json; ...`` on
  stderr and exits with status 1.

A job reused by ``auto_resume=true`` holds its earlier self's completed record and counts as
completed. A job dir without a metrics.json is unfinished: it died before writing one.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from transferlab.record import COMPLETED, FAILED, METRICS_FILE, RecordError, RunRecord
from transferlab.sweep.jobs import job_dirs, job_name

log = logging.getLogger(__name__)

UNFINISHED = "unfinished"
UNREADABLE = "unreadable"
EXIT_JOBS_FAILED = 1  # 2 is a user error in the launch itself (errors.exit_with)
# A sweep of many failed jobs still gets one readable line: the first few, then a count.
LISTED_JOBS = 5
ERROR_CHARS = 160


@dataclass(frozen=True)
class JobOutcome:
    name: str  # the job dir relative to the sweep dir: "3"
    dir: Path
    status: str  # a record's status (completed, failed, interrupted), unfinished or unreadable
    error: str | None = None
    reused_from: str | None = None

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def job_outcome(job_dir: Path, sweep_dir: str | Path) -> JobOutcome:
    name = job_name(job_dir, sweep_dir)
    path = job_dir / METRICS_FILE
    if not path.is_file():
        return JobOutcome(name, job_dir, UNFINISHED, f"no {METRICS_FILE}: it stopped before writing one")
    try:
        record = RunRecord.read(path)
    except RecordError as e:
        return JobOutcome(name, job_dir, UNREADABLE, str(e))
    return JobOutcome(name, job_dir, record.status, record.error, record.reused_from)


def job_outcomes(sweep_dir: str | Path) -> list[JobOutcome]:
    """How each job of the sweep in `sweep_dir` ended, in job order."""
    return [job_outcome(d, sweep_dir) for d in job_dirs(sweep_dir)]


def _short(text: str | None) -> str:
    text = " ".join(str(text or "no error recorded").split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def summary_line(sweep_dir: str | Path, outcomes: list[JobOutcome]) -> str:
    """The sweep's outcome in one line; it starts with "error: " when a job did not complete."""
    where = os.path.normpath(str(sweep_dir))
    done = [o for o in outcomes if o.completed]
    bad = [o for o in outcomes if not o.completed]
    if not bad:
        reused = sum(o.reused_from is not None for o in done)
        note = f" ({reused} reused from an earlier sweep)" if reused else ""
        return f"sweep: all {len(done)} jobs completed{note}: {where}; transferlab report {where} tabulates them"
    all_failed = all(o.status == FAILED for o in bad)
    what = "failed" if all_failed else "did not complete"
    listed = [f"{o.name} ({_short(o.error) if all_failed else f'{o.status}: {_short(o.error)}'})" for o in bad[:LISTED_JOBS]]
    if len(bad) > LISTED_JOBS:
        listed.append(f"and {len(bad) - LISTED_JOBS} more")
    first = bad[0].dir / METRICS_FILE
    see = os.path.join(where, bad[0].name, METRICS_FILE) if first.is_file() else os.path.join(where, bad[0].name)
    return (
        f"error: {len(bad)} of {len(outcomes)} jobs {what}: {', '.join(listed)}; "
        f"see {os.path.normpath(see)}; transferlab report {where} lists them"
    )


class SweepSummary(Callback):
    """Hydra callback: after the last job of a multirun, one line on how its jobs ended, and exit
    status 1 if any did not complete (see the module doc).

    ``entry_points``: the Hydra job names (a script's name: train.py runs as ``train``) whose jobs
    each leave a metrics.json; other sweeps are left alone (eval.py writes eval_metrics.json, and
    its sweeps stop at their first failed job anyway). ``[]`` turns the summary off.

    It exits by raising SystemExit, which also skips the ``on_multirun_end`` of callbacks that
    would run after it; Hydra runs those in reverse order of ``hydra.callbacks``, so this one,
    listed in configs/hydra/default.yaml before any preset adds its own, runs last.
    """

    def __init__(self, entry_points: Sequence[str] = ("train",)) -> None:
        self.entry_points = [str(e) for e in entry_points]

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.job.name", default=None) not in self.entry_points:
            return
        sweep_dir = str(config.hydra.sweep.dir)
        outcomes = job_outcomes(sweep_dir)
        if not outcomes:
            # e.g. a Ray or SLURM cluster whose nodes write job dirs this machine cannot see
            log.warning("sweep: no job dirs under %s, so how its jobs ended is unknown here", sweep_dir)
            return
        line = summary_line(sweep_dir, outcomes)
        if all(o.completed for o in outcomes):
            print(line, flush=True)
            return
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_JOBS_FAILED)
