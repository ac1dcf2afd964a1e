"""OmegaConf resolvers the configs use."""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf

from transferlab.utils.devices import ENV_DEVICES


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


def register() -> None:
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("transferlab.job_devices"):
        OmegaConf.register_new_resolver("transferlab.job_devices", job_devices)
