"""Refuse a process layout that would hang or train the wrong model, before any rank waits for another.

Two ways to run DDP, and what each needs (docs/multinode.md):
- trainer=ddp / ddp_cpu: one process per machine, which spawns its ranks (utils/ddp.py). One
  machine only; a launcher that started several processes would get ranks spawned in each.
- trainer=multinode: Lightning's DDP, every rank started by the cluster (srun under
  launcher=slurm, torchrun, or by hand with LOCAL_RANK / NODE_RANK). Started alone, Lightning
  would run the command line again for this machine's other ranks: the other machines never
  join, and in a multirun that starts the Hydra sweep over (a single run on one machine is left
  to it). The launcher's count must be trainer.num_nodes x trainer.devices, or the first
  collective waits for ranks that never come.
"""

from __future__ import annotations

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy

from transferlab.errors import ConfigError
from transferlab.utils.ddp import SpawnDDPStrategy
from transferlab.utils.ranks import launched_world_size, slurm_layout

_DOC = "see docs/multinode.md"


def check_process_layout(trainer) -> None:
    strategy = trainer.strategy
    nodes, devices = int(trainer.num_nodes), int(trainer.num_devices)
    launched = launched_world_size()
    if isinstance(strategy, SpawnDDPStrategy):
        if nodes > 1:
            raise ConfigError(
                f"trainer.num_nodes={nodes} with a trainer that spawns its ranks on this machine (trainer=ddp, "
                f"ddp_cpu): use trainer=multinode, where the cluster starts every rank; {_DOC}"
            )
        if launched > 1:
            raise ConfigError(
                f"this process is one of {launched} that a launcher started (WORLD_SIZE or SLURM_NTASKS), and "
                f"trainer=ddp / ddp_cpu would spawn {devices} ranks in each: use trainer=multinode, or start one "
                f"process per machine (launcher=slurm does with trainer.tasks_per_node=1); {_DOC}"
            )
        return
    if not isinstance(strategy, DDPStrategy):
        if nodes > 1:
            raise ConfigError(f"trainer.num_nodes={nodes} needs a DDP trainer: use trainer=multinode; {_DOC}")
        if launched > 1:
            raise ConfigError(
                f"this process is one of {launched} that a launcher started (WORLD_SIZE or SLURM_NTASKS), and a "
                f"one-process trainer would train {launched} separate models: use trainer=multinode; {_DOC}"
            )
        return
    expected = nodes * devices
    # Started alone, Lightning's DDP starts this machine's other ranks by running the command line
    # again: right for a single run on one machine, but other machines never join, and in a
    # multirun the command line is the whole sweep.
    if expected > 1 and not strategy.cluster_environment.creates_processes_externally and (nodes > 1 or _in_multirun()):
        raise ConfigError(
            f"trainer.num_nodes={nodes} x trainer.devices={devices}: trainer=multinode trains in processes that "
            "SLURM (launcher=slurm), torchrun or you start, one per device, and this one was started alone "
            f"(no LOCAL_RANK, RANK or SLURM_PROCID); on one machine use trainer=ddp; {_DOC}"
        )
    layout = slurm_layout() if isinstance(strategy.cluster_environment, SLURMEnvironment) else None
    if layout is not None and layout != (nodes, devices):
        raise ConfigError(
            f"SLURM gave this job {layout[0]} node(s) x {layout[1]} task(s) but the trainer wants "
            f"trainer.num_nodes={nodes} x trainer.devices={devices}: under launcher=slurm the allocation follows "
            "those two keys as the sweep starts, so set them on the command line, not in the sweep; "
            "or pass hydra.launcher.nodes and hydra.launcher.tasks_per_node to match"
        )
    if launched > 1 and launched != expected:
        raise ConfigError(
            f"the launcher started {launched} processes (WORLD_SIZE or SLURM_NTASKS) but trainer.num_nodes={nodes} "
            f"x trainer.devices={devices} is {expected}: make them agree; {_DOC}"
        )


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not under Hydra
        return False
