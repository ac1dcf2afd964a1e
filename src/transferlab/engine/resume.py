"""Where a run continues from: `ckpt_path=<checkpoint | run dir | last>`, or `auto_resume=true`.

A resumed run gets a directory of its own (runs never write into each other's directories) and
continues from the earlier run's `checkpoints/last.ckpt`, which is written at the end of every
epoch. Model, data, strategy, optimiser and seed come from the checkpoint, so
`python train.py ckpt_path=last` alone continues the newest run as it was configured. The
command line's overrides apply on top (more epochs, another device, another logger), except that
one contradicting the checkpoint's model, data, strategy, optim or seed is refused: it would
silently make another experiment.

`auto_resume=true` is for sweeps that get killed and launched again: each job looks for an earlier
job of the same task with the very same overrides. If that one finished, its results are reused
without training; if it left a last.ckpt, the job continues from it; otherwise it starts afresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab.config.overrides import parse, read_overrides
from transferlab.errors import CheckpointError
from transferlab.record import read_record
from transferlab.run_dirs import task_run_dirs

log = logging.getLogger(__name__)

LAST = "checkpoints/last.ckpt"
# The parts of a config that define the experiment: a resumed run takes them from its checkpoint.
IDENTITY_KEYS = ("model", "data", "strategy", "optim", "seed")
# Overrides that do not change which job this is (where it runs, how it logs, how it resumes).
_NOT_IDENTITY = ("ckpt_path", "auto_resume", "hydra", "paths", "logger", "callbacks", "trainer.devices",
                 "trainer.accelerator", "launcher", "tags", "test")


@dataclass
class ResumePoint:
    checkpoint: Path | None = None  # continue fitting from this file
    source_dir: Path | None = None  # the earlier run's directory
    finished: dict | None = None  # auto_resume: the earlier job completed; its metrics.json


def _identity(override: str) -> bool:
    return not parse(override).under(*_NOT_IDENTITY)


def job_identity(overrides: list[str]) -> tuple[str, ...]:
    """What makes a sweep job the job it is: its overrides, less the ones about where and how it runs."""
    return tuple(sorted(o for o in overrides if _identity(o)))


def checkpoint_in(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint file, run dir) for a checkpoint path or a run directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        ckpt = path / LAST
        if not ckpt.is_file():
            raise CheckpointError(
                f"run directory {path} has no {LAST}: it stopped before its first epoch ended, so there is nothing to "
                "resume; start it again without ckpt_path"
            )
        return ckpt, path
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such checkpoint or run directory; pass a .ckpt file, a run directory or `last`")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    return path, run_dir


def latest_checkpoint(cfg: DictConfig) -> tuple[Path, Path]:
    """ckpt_path=last: the newest run of this task that left a last.ckpt."""
    here = Path(cfg.paths.output_dir).resolve()
    for run_dir in task_run_dirs(cfg.paths.log_dir, str(cfg.task_name)):
        if run_dir.resolve() != here and (run_dir / LAST).is_file():
            return run_dir / LAST, run_dir
    raise CheckpointError(
        f"ckpt_path=last: no run of task {cfg.task_name} under {Path(cfg.paths.log_dir) / str(cfg.task_name)} has a {LAST}; "
        "pass ckpt_path=<run dir or .ckpt file> (or task_name=<the task that ran>)"
    )


def find_previous_job(cfg: DictConfig, overrides: list[str]) -> ResumePoint:
    """auto_resume: the newest earlier job of this task with the same overrides that got somewhere."""
    me = job_identity(overrides)
    here = Path(cfg.paths.output_dir).resolve()
    for run_dir in task_run_dirs(cfg.paths.log_dir, str(cfg.task_name)):
        if run_dir.resolve() == here:
            continue
        theirs = read_overrides(run_dir)
        if theirs is None or job_identity(theirs) != me:
            continue
        record = read_record(run_dir)
        if record is not None and record.completed:
            return ResumePoint(source_dir=run_dir, finished=record.to_dict())
        if (run_dir / LAST).is_file():
            return ResumePoint(checkpoint=run_dir / LAST, source_dir=run_dir)
    return ResumePoint()


def resume_point(cfg: DictConfig, overrides: list[str]) -> ResumePoint:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, ""):
        if str(ckpt_path) == "last":
            ckpt, run_dir = latest_checkpoint(cfg)
        else:
            ckpt, run_dir = checkpoint_in(ckpt_path)
        return ResumePoint(checkpoint=ckpt, source_dir=run_dir)
    if cfg.get("auto_resume"):
        return find_previous_job(cfg, overrides)
    return ResumePoint()


def _stored(ckpt: dict, path: Path) -> dict:
    stored = (ckpt.get("transferlab") or {}).get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path} holds no transferlab run config, so it cannot be resumed: resume checkpoints written by train.py")
    return stored


# Always this launch's own: where it writes and how it resumes.
_ALWAYS_CURRENT = ("paths", "ckpt_path", "auto_resume", "task_name")


def resumed_config(cfg: DictConfig, ckpt: dict, path: Path, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with this command line's overrides on top.

    Overrides of the experiment's parts (IDENTITY_KEYS) must agree with the checkpoint; the rest
    (e.g. trainer.max_epochs=30, trainer.accelerator=gpu, logger=wandb) apply. A config group chosen
    on the command line (`trainer=gpu`) replaces the stored group whole.
    """
    stored = OmegaConf.create(_stored(ckpt, path))
    plain = lambda v: OmegaConf.to_container(v, resolve=False) if OmegaConf.is_config(v) else v  # noqa: E731
    conflicts = []
    for o in overrides:
        key = parse(o).key
        if key.split(".")[0] in IDENTITY_KEYS and _identity(o):
            mine, theirs = OmegaConf.select(cfg, key, default=None), OmegaConf.select(stored, key, default=None)
            if plain(mine) != plain(theirs):
                conflicts.append(f"{key}: checkpoint {plain(theirs)!r}, command line {plain(mine)!r}")
    if conflicts:
        raise CheckpointError(
            f"resuming {path}: the command line changes the experiment ({'; '.join(conflicts)}); "
            "drop those overrides to continue the run as it was, or start a new run without ckpt_path"
        )
    resumed = stored.copy()
    with open_dict(resumed):
        for key in cfg:
            if key in _ALWAYS_CURRENT or key not in resumed:
                resumed[key] = cfg[key]
        for o in overrides:
            key = parse(o).key
            top = key.split(".")[0]
            if top in IDENTITY_KEYS or top in _ALWAYS_CURRENT or top not in cfg or o.startswith("~"):
                continue  # identity parts agree already; global-package groups are in the stored config
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    return resumed


def stored_choices(ckpt: dict) -> dict[str, Any]:
    return dict((ckpt.get("transferlab") or {}).get("choices") or {})


def stored_wandb_id(ckpt: dict) -> str | None:
    return (ckpt.get("transferlab") or {}).get("wandb_id")


def epochs_done(ckpt: dict) -> int:
    """How many epochs the checkpoint's run had finished when it was written."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(ckpt.get("epoch", -1)) + 1


def refuse_finished(cfg: DictConfig, ckpt: dict, point: ResumePoint) -> None:
    """A finished run that already trained every epoch asked of it has nothing to resume: it would
    only write a second record of the same run (and a report would count its seed twice). One that
    trained them all but was stopped before it recorded them (killed while testing) is only tested."""
    done, wanted = epochs_done(ckpt), int(cfg.trainer.max_epochs)
    earlier = read_record(point.source_dir) if point.source_dir is not None else None
    if done >= wanted and earlier is not None and earlier.completed:
        where = point.source_dir or point.checkpoint
        raise CheckpointError(
            f"{where} already trained its {done} epochs (trainer.max_epochs={wanted}), so there is nothing to resume; "
            f"its results are in its metrics.json: pass trainer.max_epochs=<more than {done}> to train it longer, "
            "or start a new run without ckpt_path"
        )
