"""A pool of device ids shared by the jobs of a multirun on one machine.

Each device id is a lock file in ``pool_dir``. A job holds a device by keeping an ``flock`` on
that file through an fd it leaves open; the kernel drops the lock when the last fd on it closes,
so a job that crashes or is SIGKILLed gives its device back without any cleanup code running.
Nothing is ever "reserved" in file contents: the lock is the truth, file contents are only notes
for humans and for the audit trail.

Audit trail: ``records.jsonl`` in the pool dir, one JSON object per line, appended under an
exclusive lock so lines from many processes never interleave. Events:

- ``acquire``: token, job, pid, host, ids, requested_at, acquired_at, waited_s (+ caller info)
- ``release``: token, job, pid, ids, released_at, held_s (+ caller info, e.g. job status)
- ``reclaim``: a later acquirer found a lock file still naming a holder that never released,
  i.e. that holder died holding it; ``stale`` names it. Its device was free from the moment it
  died, at the latest from ``reclaimed_at``.

:func:`read_records` joins these into one dict per acquisition.

Hydra: :class:`DevicePoolCallback` takes devices in ``on_job_start`` and gives them back in
``on_job_end``; ``configs/launcher/parallel.yaml`` wires it to the joblib launcher.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # the pool itself is useful without Hydra
    _HydraCallback = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
_LOCK_PREFIX = "device-"
_LOCK_SUFFIX = ".lock"
_CPU_SLOT = re.compile(r"^cpu\d+$")

# Set for the job by DevicePoolCallback, so training code can log or check what it was given.
ENV_DEVICES = "TRANSFERLAB_DEVICES"
ENV_POOL_ERROR = "TRANSFERLAB_DEVICE_POOL_ERROR"


def _lock_filename(device_id: str) -> str:
    return _LOCK_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", device_id) + _LOCK_SUFFIX


def is_cpu_slot(device_id: str) -> bool:
    return bool(_CPU_SLOT.match(str(device_id)))


def visible_devices(cpu_slots: int = 1) -> list[str]:
    """Device ids a pool can hand out on this machine.

    GPU ids are in the namespace of the parent's ``CUDA_VISIBLE_DEVICES`` (physical indices,
    UUIDs or MIG ids as given there), so a job can be pinned by exporting one of them.
    Without GPUs, returns ``cpu_slots`` slots ``cpu0, cpu1, ...``: holding one only limits how
    many jobs run at once.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids: list[str] = []
        for part in env.split(","):
            part = part.strip()
            # CUDA ignores every entry from the first invalid one on ("-1" is the usual way
            # to hide all GPUs), so the pool must too.
            if not part or part.startswith("-"):
                break
            ids.append(part)
        if ids:
            return ids
    else:
        try:
            import torch

            # device_count() asks NVML when it can, which leaves CUDA uninitialised in this
            # (parent) process; worker processes must be free to pick their own devices.
            n = torch.cuda.device_count()
        except Exception:  # no torch or a broken driver: treat as a CPU-only machine
            n = 0
        if n > 0:
            return [str(i) for i in range(n)]
    if cpu_slots < 1:
        raise ValueError(f"cpu_slots must be >= 1, got {cpu_slots}")
    return [f"cpu{i}" for i in range(cpu_slots)]


class DevicePool:
    """Exclusive, crash-safe holds on device ids, shared by processes through ``pool_dir``.

    One instance holds at most one set of devices at a time. ``with pool:`` holds one device
    (unless ``acquire`` was already called) and releases it on exit; the ids are ``pool.held``.
    """

    def __init__(
        self,
        pool_dir: str | Path,
        device_ids: Sequence[str | int],
        poll_s: float = 0.2,
    ) -> None:
        ids = [str(d) for d in device_ids]
        if not ids:
            raise ValueError("DevicePool needs at least one device id")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate device ids in {ids}")
        names = {_lock_filename(d) for d in ids}
        if len(names) != len(ids):
            raise ValueError(f"device ids {ids} map to clashing lock file names")
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.pool_dir = Path(pool_dir)
        self.pool_dir.mkdir(parents=True, exist_ok=True)
        self.device_ids = ids
        self.poll_s = float(poll_s)
        self._held: dict[str, int] = {}
        self._token: str | None = None
        self._job: str | None = None
        self._acquired_at = 0.0
        self._owner_pid = 0

    @property
    def held(self) -> list[str]:
        return list(self._held)

    @property
    def records_path(self) -> Path:
        return self.pool_dir / RECORDS_FILE

    def lock_path(self, device_id: str) -> Path:
        return self.pool_dir / _lock_filename(str(device_id))

    def acquire(
        self,
        n: int = 1,
        timeout_s: float | None = None,
        *,
        job: str | None = None,
        among: Sequence[str | int] | None = None,
        info: dict[str, Any] | None = None,
    ) -> list[str]:
        """Block until ``n`` devices are free, hold them and return their ids.

        ``among`` restricts the choice (e.g. to the devices a process has already initialised
        CUDA on); ``job`` names the holder in the records (default ``pid<pid>``); ``info`` is
        added to the acquire record. Raises ``TimeoutError`` after ``timeout_s`` seconds.
        """
        if self._held:
            raise RuntimeError(f"this pool object already holds {self.held}; release() first")
        candidates = self.device_ids if among is None else [str(d) for d in among]
        unknown = [d for d in candidates if d not in self.device_ids]
        if unknown:
            raise ValueError(f"devices {unknown} are not in the pool {self.device_ids}")
        if not 1 <= n <= len(candidates):
            raise ValueError(f"cannot take {n} device(s) from {candidates}")

        job = job or f"pid{os.getpid()}"
        requested_at = time.time()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            got: dict[str, int] = {}
            for d in candidates:
                fd = self._try_lock(d)
                if fd is not None:
                    got[d] = fd
                    if len(got) == n:
                        break
            if len(got) == n:
                break
            # Give a partial set back at once rather than sit on devices another job could
            # run on while this one waits for the rest.
            for fd in got.values():
                self._unlock(fd)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"device pool {self.pool_dir}: {job} waited {timeout_s:g}s for {n} free "
                    f"device(s) among {candidates}; last holders: {self._describe_holders(candidates)}"
                )
            wait = self.poll_s
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            time.sleep(wait)

        acquired_at = time.time()
        token = uuid.uuid4().hex
        me = {"token": token, "job": job, "pid": os.getpid(), "host": socket.gethostname()}
        stale: list[tuple[str, dict[str, Any]]] = []
        for d, fd in got.items():
            previous = _read_holder(fd)
            if previous:
                stale.append((d, previous))
            note = json.dumps({**me, "acquired_at": acquired_at}).encode() + b"\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        self._held, self._token, self._job = got, token, job
        self._acquired_at, self._owner_pid = acquired_at, os.getpid()

        for d, previous in stale:
            # The lock file still names a holder that never released: it died holding the
            # device (the kernel freed the lock). Say so, so the audit shows when it came back.
            self._append(
                {"event": "reclaim", "token": token, "job": job, "ids": [d],
                 "reclaimed_at": acquired_at, "stale": previous}
            )
        self._append(
            {"event": "acquire", **me, "ids": list(got), "requested_at": requested_at,
             "acquired_at": acquired_at, "waited_s": acquired_at - requested_at, **(info or {})}
        )
        return list(got)

    def release(self, info: dict[str, Any] | None = None) -> None:
        """Give back what this object holds (a no-op if nothing)."""
        if not self._held:
            return
        held, self._held = self._held, {}
        if os.getpid() != self._owner_pid:
            # A forked copy of the holder: the lock belongs to the open file description it
            # shares with its parent, so unlocking here would free the parent's device.
            for fd in held.values():
                os.close(fd)
            return
        released_at = time.time()
        # Record before unlocking, so no record ever claims a device is free while it is held.
        self._append(
            {"event": "release", "token": self._token, "job": self._job, "pid": os.getpid(),
             "ids": list(held), "released_at": released_at,
             "held_s": released_at - self._acquired_at, **(info or {})}
        )
        for fd in held.values():
            try:
                os.ftruncate(fd, 0)  # an empty file tells the next holder this was a clean release
            finally:
                self._unlock(fd)

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.pool_dir)

    def __enter__(self) -> "DevicePool":
        if not self._held:
            self.acquire(1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _try_lock(self, device_id: str) -> int | None:
        fd = os.open(self.lock_path(device_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _unlock(fd: int) -> None:
        # Explicit LOCK_UN: children forked by the job (e.g. DataLoader workers) share this
        # open file description, and a bare close() would leave the lock held through them.
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _describe_holders(self, ids: Sequence[str]) -> str:
        parts = []
        for d in ids:
            try:
                text = self.lock_path(d).read_text().strip()
                holder = json.loads(text) if text else {}
            except (OSError, ValueError):
                holder = {}
            who = f"{holder.get('job', '?')} (pid {holder.get('pid', '?')})" if holder else "?"
            parts.append(f"{d}: {who}")
        return ", ".join(parts)

    def _append(self, record: dict[str, Any]) -> None:
        _append_jsonl(self.records_path, record)


def _read_holder(fd: int) -> dict[str, Any]:
    data = os.pread(fd, 65536, 0).strip()
    if not data:
        return {}
    try:
        holder = json.loads(data)
    except ValueError:  # killed mid-write: still a holder that never released
        return {"unparsable": data.decode(errors="replace")}
    return holder if isinstance(holder, dict) else {"unparsable": str(holder)}


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        # O_APPEND alone is not atomic for long lines or on network file systems.
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_records(pool_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per acquisition, in acquire order.

    Keys: token, job, pid, ids, requested_at, acquired_at, released_at (None without a release
    record), reclaimed_at (earliest time another job found it dead-held, else None), status
    (``released``, ``reclaimed`` = died holding, or ``held`` = still running or died unnoticed),
    plus everything else the acquire record carried and the release record's extra keys
    under ``release``.
    """
    path = Path(pool_dir) / RECORDS_FILE
    if not path.exists():
        return []
    acquisitions: dict[str, dict[str, Any]] = {}
    releases: dict[str, dict[str, Any]] = {}
    reclaims: dict[str, float] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by a killed writer
            continue
        event = rec.get("event")
        if event == "acquire":
            acquisitions[rec["token"]] = rec
        elif event == "release":
            releases[rec["token"]] = rec
        elif event == "reclaim":
            dead = rec.get("stale", {}).get("token")
            if dead:
                t = rec["reclaimed_at"]
                reclaims[dead] = min(t, reclaims.get(dead, t))
    out = []
    for token, acq in acquisitions.items():
        rel = releases.get(token)
        row = {k: v for k, v in acq.items() if k != "event"}
        row["released_at"] = rel["released_at"] if rel else None
        row["reclaimed_at"] = reclaims.get(token)
        row["release"] = (
            {k: v for k, v in rel.items() if k not in ("event", "token", "job", "pid", "ids")}
            if rel
            else None
        )
        row["status"] = "released" if rel else ("reclaimed" if token in reclaims else "held")
        out.append(row)
    out.sort(key=lambda r: r["acquired_at"])
    return out


# --- Hydra -----------------------------------------------------------------------------------

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


try:
    from omegaconf import OmegaConf

    # Hydra instantiates callbacks (importing this module) before it builds the launcher, so
    # the resolver exists by the time hydra.launcher.n_jobs is read.
    OmegaConf.register_new_resolver("transferlab.pool_jobs", pool_n_jobs, replace=True)
except ImportError:
    pass


class DevicePoolCallback(_HydraCallback):
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
        from omegaconf import OmegaConf

        return OmegaConf.select(config, key, default=None)
    except Exception:  # an unresolvable interpolation must not stop the job
        return None


def _is_multirun(config: Any) -> bool:
    mode = _select(config, "hydra.mode")
    return mode is not None and str(getattr(mode, "name", mode)).upper() == "MULTIRUN"
