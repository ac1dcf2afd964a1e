"""OmegaConf resolvers the configs use."""

from __future__ import annotations

import netrc
import os

from omegaconf import ListConfig, OmegaConf

from transferlab.errors import ConfigError
from transferlab.utils.devices import ENV_DEVICES
from transferlab.utils.ranks import first_process, process_tag


def wandb_offline() -> bool:
    """Offline unless the user is logged in (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_MODE") in ("online", "offline"):
        return os.environ["WANDB_MODE"] == "offline"
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def job_devices(default: int) -> int:
    """How many devices the sweep's device pool gave this job (launcher=parallel), else `default`.

    The pool exports the ids it holds for the job; GPUs are also narrowed to them through
    CUDA_VISIBLE_DEVICES, so a count is all the trainer needs. Empty means no pool, or one that
    failed to give a device (its error is in TRANSFERLAB_DEVICE_POOL_ERROR).
    """
    ids = [d for d in os.environ.get(ENV_DEVICES, "").split(",") if d.strip()]
    return len(ids) or int(default)


def slurm_gpus(accelerator, devices) -> int | None:
    """GPUs per node that launcher=slurm asks for: the trainer's device count; None on the CPU,
    which leaves --gpus-per-node out of the job rather than ask SLURM for zero of them."""
    if str(accelerator) == "cpu":
        return None
    if isinstance(devices, int) and devices >= 1:
        return devices
    if isinstance(devices, (list, ListConfig)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit() and int(devices) >= 1:
        return int(devices)
    raise ConfigError(f"launcher=slurm needs trainer.devices as a count of GPUs per node (got {devices!r}): pass trainer.devices=N")


def hydra_subdir(name: str) -> str | None:
    """Hydra's output subdir for this process: `name` for the first, none for the other ranks of a
    multi-node run, which share its run dir and would write the same files over each other."""
    return name if first_process() else None


def log_suffix() -> str:
    """'' for the first process, `.<tag>` for another rank: each rank logs to a file of its own."""
    tag = process_tag()
    return f".{tag}" if tag else ""


def register() -> None:
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("transferlab.job_devices"):
        OmegaConf.register_new_resolver("transferlab.job_devices", job_devices)
    if not OmegaConf.has_resolver("transferlab.slurm_gpus"):
        OmegaConf.register_new_resolver("transferlab.slurm_gpus", slurm_gpus)
    if not OmegaConf.has_resolver("transferlab.hydra_subdir"):
        OmegaConf.register_new_resolver("transferlab.hydra_subdir", hydra_subdir)
    if not OmegaConf.has_resolver("transferlab.log_suffix"):
        OmegaConf.register_new_resolver("transferlab.log_suffix", log_suffix)
