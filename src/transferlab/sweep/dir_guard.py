"""Never start a run in a directory that already holds one.

A second run in the same ``hydra.run.dir`` replaces the first one's metrics.json, resolved config
and CSV log, and leaves its checkpoints beside the new ones; a second sweep in the same
``hydra.sweep.dir`` does the same to every job dir it shares with the first. The default dirs are
timestamped and never collide, resumed runs (``ckpt_path=...``, ``auto_resume=true``) write new
dirs too: only a dir given by hand can hold an earlier run.

:class:`OutputDirGuard` (``hydra.callbacks.output_dir_guard`` in ``configs/hydra/default.yaml``)
checks before Hydra creates anything: ``on_run_start`` for a single run, ``on_multirun_start`` for
a sweep. A used dir ends the launch with one ``error:`` line naming the dir and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from transferlab.errors import OutputError, exit_with
from transferlab.record import METRICS_FILE
from transferlab.run_dirs import CHECKPOINTS_DIR, HYDRA_DIR
from transferlab.sweep.jobs import any_job_dir, job_dirs
from transferlab.utils.ranks import first_process

# What a run leaves in its dir: train.py's record, Hydra's resolved config, Lightning's checkpoints.
RUN_FILES = (METRICS_FILE, f"{HYDRA_DIR}/config.yaml", CHECKPOINTS_DIR)


def run_files_in(run_dir: str | Path) -> list[str]:
    """The files of an earlier run in `run_dir` (empty for a new or unused dir)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def used_run_dir_error(run_dir: str | Path) -> OutputError | None:
    found = run_files_in(run_dir)
    if not found:
        return None
    return OutputError(
        f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}), which this run would overwrite: "
        f"pass another hydra.run.dir (or leave it unset for a new timestamped dir), or delete {run_dir} to run there again"
    )


def used_sweep_dir_error(sweep_dir: str | Path) -> OutputError | None:
    if any_job_dir(sweep_dir) is None:
        return None
    jobs = job_dirs(sweep_dir)
    return OutputError(
        f"hydra.sweep.dir={sweep_dir} already holds {len(jobs)} job dir{'s' if len(jobs) != 1 else ''} of an earlier "
        f"sweep, which this sweep would overwrite: pass another hydra.sweep.dir (or leave it unset for a new "
        f"timestamped dir), or delete {sweep_dir} to sweep there again"
    )


def _started_by_the_first_rank() -> bool:
    # Another rank of the same run: Lightning's `ddp` re-running the command line (LOCAL_RANK), or
    # a rank that SLURM, torchrun or a user started (trainer=multinode) with the first rank's
    # hydra.run.dir. That dir is this run's own, and only the first rank writes the run's files there.
    return not first_process()


class OutputDirGuard(Callback):
    """Hydra callback: refuse a run or sweep dir that already holds a run (see the module doc)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        if _started_by_the_first_rank():
            return
        error = used_run_dir_error(str(config.hydra.run.dir))
        if error is not None:
            exit_with(error)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        error = used_sweep_dir_error(str(config.hydra.sweep.dir))
        if error is not None:
            exit_with(error)
