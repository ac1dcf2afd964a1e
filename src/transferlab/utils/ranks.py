"""Which process of a distributed job this is, as the launcher that started it says.

With trainer=multinode every rank is a `python train.py` of its own, started by SLURM (srun sets
SLURM_PROCID), torchrun (RANK) or by hand for Lightning's default environment (NODE_RANK and
LOCAL_RANK). Hydra's callbacks, the log file's name and a failure's record are decided before a
Trainer exists, so they read the environment here. The ranks that trainer=ddp / ddp_cpu spawn
never run Hydra or train(), so they need no name.
"""

from __future__ import annotations

import os

# Any of them non-zero: not the job's first process.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else None
    except ValueError:  # a launcher's value we do not understand counts as unset
        return None


def first_process() -> bool:
    """True for the process that writes the run's files: global rank 0, or a process started alone."""
    return all((_env_int(v) or 0) == 0 for v in _RANK_VARIABLES)


def process_tag() -> str:
    """'' for the first process; otherwise a name for this one: `rank3`, or `node1-local0` for ranks
    started by hand (whose global rank Lightning computes from the trainer's devices)."""
    if first_process():
        return ""
    for name in ("RANK", "SLURM_PROCID"):
        rank = _env_int(name)
        if rank is not None:
            return f"rank{rank}"
    node = _env_int("NODE_RANK") if _env_int("NODE_RANK") is not None else _env_int("GROUP_RANK")
    return f"node{node or 0}-local{_env_int('LOCAL_RANK') or 0}"


def launched_world_size() -> int:
    """How many processes a launcher started for this job: WORLD_SIZE (torchrun, by hand),
    SLURM_NTASKS (srun); 1 without a launcher. SLURM_NTASKS counts only in a task srun started
    (SLURM_PROCID set): a shell inside an allocation (salloc) has it too, and is one process."""
    size = _env_int("WORLD_SIZE")
    if size is None and "SLURM_PROCID" in os.environ:
        size = _env_int("SLURM_NTASKS")
    return size if size is not None else 1


def slurm_layout() -> tuple[int, int] | None:
    """(nodes, tasks per node) of the SLURM job step this process runs in, when srun started it."""
    nodes = _env_int("SLURM_NNODES")
    # A uniform layout reads "4"; a mixed one "4(x2),3", whose first count is all we compare.
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0].split(",")[0].strip()
    if nodes is None or not per_node.isdigit() or "SLURM_PROCID" not in os.environ:
        return None
    return nodes, int(per_node)
