"""Which task a run is (`task=`, configs/task/): classify (the default), mlm (continued pre-training of a
text encoder, engine/pretrain.py) or tapt (mlm on the run's own texts, then classify)."""

from __future__ import annotations

from omegaconf import DictConfig

from transferlab.errors import ConfigError

CLASSIFY, MLM, TAPT = "classify", "mlm", "tapt"
TASKS = (CLASSIFY, MLM, TAPT)


def task_of(cfg: DictConfig) -> str:
    """The task; a config from before `task` existed (a stored checkpoint's) is a classification run."""
    task = cfg.get("task")
    name = str(task.get("name", CLASSIFY)) if task is not None else CLASSIFY
    if name not in TASKS:
        raise ConfigError(f"task.name={name!r} is unknown: use task=classify, task=mlm or task=tapt")
    return name
