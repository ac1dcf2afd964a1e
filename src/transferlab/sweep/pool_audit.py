"""The device pool's audit trail: who held which device, from when to when.

``records.jsonl`` in the pool dir, one JSON object per line, appended under an exclusive lock so
lines from many processes never interleave. Events:

- ``acquire``: token, job, pid, host, ids, requested_at, acquired_at, waited_s (+ caller info)
- ``release``: token, job, pid, ids, released_at, held_s (+ caller info, e.g. job status)
- ``reclaim``: a later acquirer found a lock file still naming a holder that never released,
  i.e. that holder died holding it; ``stale`` names it. Its device was free from the moment it
  died, at the latest from ``reclaimed_at``.

:func:`read_records` joins these into one dict per acquisition.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

RECORDS_FILE = "records.jsonl"


def append_record(path: str | Path, record: dict[str, Any]) -> None:
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
