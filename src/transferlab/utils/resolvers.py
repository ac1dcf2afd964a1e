"""OmegaConf resolvers the configs use."""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf


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


def register() -> None:
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
