"""The Lightning trainer of a run, from its `trainer`, `callbacks` and `logger` config, and the
checks that it agrees with the devices the sweep's pool holds for the job."""

from __future__ import annotations

import logging

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from transferlab.data.loaders import rank_batch_size
from transferlab.engine.builders import plain
from transferlab.engine.module import TransferModule
from transferlab.errors import ConfigError
from transferlab.finetune.callback import FinetuneCallback
from transferlab.utils.ddp_layout import check_process_layout
from transferlab.utils.devices import held_devices

log = logging.getLogger(__name__)

# Keys of the trainer config that are ours, not pl.Trainer's (they ride with the device choice).
TRAINER_EXTRA_KEYS = ("compile", "tasks_per_node")


def instantiate_trainer(cfg: DictConfig, **kwargs) -> pl.Trainer:
    trainer_cfg = {k: v for k, v in plain(cfg.trainer).items() if k not in TRAINER_EXTRA_KEYS}
    return hydra.utils.instantiate(trainer_cfg, **kwargs)


def make_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] = (), logger: bool = True) -> pl.Trainer:
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += [FinetuneCallback(), *extra_callbacks]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c] if logger else False
    trainer = instantiate_trainer(cfg, callbacks=callbacks, logger=loggers)
    _check_devices(cfg, trainer)
    return trainer


def finetune_callback(trainer: pl.Trainer) -> FinetuneCallback:
    return next(cb for cb in trainer.callbacks if isinstance(cb, FinetuneCallback))


def maybe_compile(cfg: DictConfig, module: TransferModule) -> None:
    """trainer.compile=true: torch.compile the backbone in place (state-dict keys unchanged, so
    checkpoints stay loadable without it). Pays off on GPUs after the first, slower steps. A
    string names torch.compile's backend instead of its default (`eager` traces without code
    generation: scripts/gpu_check.py's CPU smoke run)."""
    choice = cfg.trainer.get("compile")
    if not choice:
        return
    backend = choice if isinstance(choice, str) else "inductor"
    log.info("torch.compile (%s): compiling the backbone (the first steps are slow)", backend)
    module.backbone.compile(backend=backend)


def _check_devices(cfg: DictConfig, trainer: pl.Trainer) -> None:
    check_process_layout(trainer)
    held = held_devices()
    if held and len(held) != trainer.num_devices:
        # A held device the trainer leaves idle is one no other sweep job can use.
        raise ConfigError(
            f"the device pool holds {len(held)} devices for this job ({','.join(held)}) but the trainer uses "
            f"{trainer.num_devices}: use trainer=ddp_cpu or trainer=ddp (they take the pool's count), or set "
            f"hydra.callbacks.device_pool.devices_per_job={trainer.num_devices}"
        )
    if trainer.world_size > 1:
        per_rank = rank_batch_size(int(cfg.data.batch_size), trainer.world_size, train=True)  # fails here, not in a rank
        where = type(trainer.accelerator).__name__.replace("Accelerator", "")
        if trainer.num_nodes > 1:
            where += f", {trainer.num_nodes} nodes of {trainer.num_devices}"
        log.info(
            "DDP: %d processes on %s; data.batch_size=%d is the global batch, %d per process",
            trainer.world_size, where, int(cfg.data.batch_size), per_rank,
        )
