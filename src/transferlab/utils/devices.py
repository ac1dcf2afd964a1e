"""What the sweep's device pool gave this job, as the environment tells it (set by the pool's
Hydra callback, read by the trainer config and the device check)."""

from __future__ import annotations

import os

ENV_DEVICES = "TRANSFERLAB_DEVICES"
ENV_POOL_ERROR = "TRANSFERLAB_DEVICE_POOL_ERROR"


def held_devices() -> list[str]:
    """The device ids the pool holds for this job; empty without a pool."""
    return [d for d in os.environ.get(ENV_DEVICES, "").split(",") if d.strip()]
