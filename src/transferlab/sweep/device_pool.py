"""A pool of device ids shared by the jobs of a multirun on one machine.

Each device id is a lock file in ``pool_dir``. A job holds a device by keeping an ``flock`` on
that file through an fd it leaves open; the kernel drops the lock when the last fd on it closes,
so a job that crashes or is SIGKILLed gives its device back without any cleanup code running.
Nothing is ever "reserved" in file contents: the lock is the truth, file contents are only notes
for humans and for the audit trail (:mod:`transferlab.sweep.pool_audit`).

Hydra drives the pool through :mod:`transferlab.sweep.pool_callback`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from transferlab.sweep.pool_audit import RECORDS_FILE, append_record


_LOCK_PREFIX = "device-"
_LOCK_SUFFIX = ".lock"
_CPU_SLOT = re.compile(r"^cpu\d+$")


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

    One instance holds at most one set of devices at a time; their ids are ``pool.held``.
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
        append_record(self.records_path, record)


def _read_holder(fd: int) -> dict[str, Any]:
    data = os.pread(fd, 65536, 0).strip()
    if not data:
        return {}
    try:
        holder = json.loads(data)
    except ValueError:  # killed mid-write: still a holder that never released
        return {"unparsable": data.decode(errors="replace")}
    return holder if isinstance(holder, dict) else {"unparsable": str(holder)}
