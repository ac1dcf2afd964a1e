"""What a sweep's device pool gave this job, as the job's environment carries it.

The pool's Hydra callback (transferlab.sweep.pool_callback) sets these in the process that runs
the job; training code reads them here, so it needs nothing from the sweep layer.
"""

from __future__ import annotations

import os

# The ids the pool holds for this job, comma-separated; empty when a pool gave none.
ENV_DEVICES = "TRANSFERLAB_DEVICES"
# Why the pool gave this job no device (set only when acquiring failed).
ENV_POOL_ERROR = "TRANSFERLAB_DEVICE_POOL_ERROR"


def held_devices() -> list[str]:
    """The device ids the pool holds for this job; empty without a pool, or when it gave none."""
    return [d.strip() for d in os.environ.get(ENV_DEVICES, "").split(",") if d.strip()]
