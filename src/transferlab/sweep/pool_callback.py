"""Hydra glue for the device pool: each multirun job holds devices of its own while it runs.

:class:`DevicePoolCallback` takes devices in ``on_job_start`` and gives them back in
``on_job_end``; the ``transferlab.pool_jobs`` resolver sizes the launcher from the same settings.
``configs/launcher/parallel.yaml`` wires both to the joblib launcher.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from transferlab.sweep.device_pool import DevicePool, is_cpu_slot, visible_devices
from transferlab.utils.devices import ENV_DEVICES, ENV_POOL_ERROR

log = logging.getLogger(__name__)

# Per worker process, not per callback object: Hydra pickles the callback into every job, so
# instance attributes do not survive from one job to the next in a reused joblib worker.
# Keyed by pid too, so a process forked from a worker starts with nothing held or bound.
_PROCESS_POOLS: dict[tuple[int, str], DevicePool] = {}
_BOUND_DEVICES: dict[tuple[int, str], list[str]] = {}


def _process_pool(pool_dir: str, device_ids: Sequence[str], poll_s: float) -> DevicePool:
    key = (os.getpid(), pool_dir)
    if key not in _PROCESS_POOLS:
        _PROCESS_POOLS[key] = DevicePool(pool_dir, device_ids, poll_s)
    return _PROCESS_POOLS[key]


def _as_id_list(devices: Any) -> list[str]:
    if isinstance(devices, str):
        return [d.strip() for d in devices.split(",") if d.strip()]
    if isinstance(devices, int):
        return [str(devices)]
    return [str(d) for d in devices]


def pool_n_jobs(callback_cfg: Any) -> int:
    """How many jobs can run at once: ``len(devices) // devices_per_job``.

    Registered as the OmegaConf resolver ``transferlab.pool_jobs`` so ``parallel.yaml`` can size
    the joblib launcher from the callback's own settings.
    """
    get = callback_cfg.get
    devices = get("devices")
    ids = _as_id_list(devices) if devices is not None else visible_devices(int(get("cpu_slots", 1)))
    return max(1, len(ids) // int(get("devices_per_job", 1)))


# Hydra instantiates callbacks (importing this module) before it builds the launcher, so the
# resolver exists by the time hydra.launcher.n_jobs is read.
OmegaConf.register_new_resolver("transferlab.pool_jobs", pool_n_jobs, replace=True)


class DevicePoolCallback(Callback):
    """Hydra callback: each multirun job holds ``devices_per_job`` devices while it runs.

    ``on_job_start`` and ``on_job_end`` run in the process that runs the job (for the joblib
    launcher: the loky worker), around the task function, also when it raises. The job sees
    its devices as ``CUDA_VISIBLE_DEVICES`` (GPUs only; CPU slots just limit concurrency) and
    as ``TRANSFERLAB_DEVICES``.

    A worker process that has run a job on some GPUs keeps taking those same GPUs: CUDA reads
    ``CUDA_VISIBLE_DEVICES`` once per process, so a reused worker cannot move to another GPU.
    With ``n_jobs <= devices // devices_per_job`` (the default in parallel.yaml) that costs
    nothing; with more workers than devices, a worker may wait for "its" GPU while another
    is free.

    Hydra turns exceptions raised by callbacks into warnings and runs the job anyway, so when
    acquisition fails (only possible with ``timeout_s``) the job is given no GPU at all
    (``CUDA_VISIBLE_DEVICES=""``) and ``TRANSFERLAB_DEVICE_POOL_ERROR`` says why, rather than
    letting it pile onto a device another job holds.
    """

    def __init__(
        self,
        pool_dir: str,
        devices_per_job: int = 1,
        devices: Sequence[str | int] | str | None = None,
        cpu_slots: int = 1,
        timeout_s: float | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.pool_dir = os.path.abspath(str(pool_dir))
        self.devices_per_job = int(devices_per_job)
        # Resolved here, in the launching process: a worker's own CUDA_VISIBLE_DEVICES has
        # already been narrowed by an earlier job.
        self.device_ids = (
            _as_id_list(devices) if devices is not None else visible_devices(int(cpu_slots))
        )
        if not 1 <= self.devices_per_job <= len(self.device_ids):
            raise ValueError(
                f"devices_per_job={self.devices_per_job} but the pool has {self.device_ids}"
            )
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.poll_s = float(poll_s)
        self.uses_gpus = not all(is_cpu_slot(d) for d in self.device_ids)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        Path(self.pool_dir).mkdir(parents=True, exist_ok=True)
        n_jobs = _select(config, "hydra.launcher.n_jobs")
        log.info(
            "Device pool %s: devices %s, %d per job, launcher n_jobs=%s",
            self.pool_dir, self.device_ids, self.devices_per_job, n_jobs,
        )
        if isinstance(n_jobs, int) and n_jobs * self.devices_per_job > len(self.device_ids):
            log.warning(
                "n_jobs=%d x devices_per_job=%d exceeds the %d pooled devices: extra workers "
                "will wait for a device", n_jobs, self.devices_per_job, len(self.device_ids),
            )

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return  # a single run has the machine to itself
        pool = _process_pool(self.pool_dir, self.device_ids, self.poll_s)
        if pool.held:
            # The previous job in this worker ended without on_job_end: Hydra skips it when
            # the task raises a BaseException (KeyboardInterrupt, SystemExit).
            log.warning("Device pool: releasing %s left held by this worker's previous job", pool.held)
            pool.release(info={"status": "UNKNOWN", "note": "previous job ended without on_job_end"})
        num = _select(config, "hydra.job.num")
        job = f"job{num}" if num is not None else f"pid{os.getpid()}"
        among = _BOUND_DEVICES.get((os.getpid(), self.pool_dir)) if self.uses_gpus else None
        info = {
            "overrides": list(_select(config, "hydra.overrides.task") or []),
            "job_dir": _select(config, "hydra.runtime.output_dir"),
        }
        try:
            ids = pool.acquire(
                self.devices_per_job, timeout_s=self.timeout_s, job=job, among=among, info=info
            )
        except Exception as e:
            log.error("Device pool: %s got no device: %s", job, e)
            os.environ[ENV_POOL_ERROR] = f"{type(e).__name__}: {e}"
            os.environ[ENV_DEVICES] = ""
            if self.uses_gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = ""
            raise
        os.environ.pop(ENV_POOL_ERROR, None)
        os.environ[ENV_DEVICES] = ",".join(ids)
        if self.uses_gpus:
            _BOUND_DEVICES[(os.getpid(), self.pool_dir)] = ids
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        log.info("Device pool: %s holds %s", job, ids)

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        pool = _PROCESS_POOLS.get((os.getpid(), self.pool_dir))
        if pool is None or not pool.held:
            return
        status = getattr(getattr(job_return, "status", None), "name", None)
        pool.release(info={"status": status})


def _select(config: Any, key: str) -> Any:
    try:
        return OmegaConf.select(config, key, default=None)
    except Exception:  # an unresolvable interpolation must not stop the job
        return None


def _is_multirun(config: Any) -> bool:
    mode = _select(config, "hydra.mode")
    return mode is not None and str(getattr(mode, "name", mode)).upper() == "MULTIRUN"
