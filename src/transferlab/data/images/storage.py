"""Where a source's images live while a run trains: in memory, or streamed from LitData chunks.

`data.storage=memory` holds every split as one uint8 tensor; `stream` converts the source once into
LitData's optimized chunks (data/images/stream_store.py) and reads batches from them; `auto` streams when
the images would take more than `data.memory_budget` of memory. Both give the very same batches:
only where the bytes wait differs.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("memory", "stream", "auto")
# What litdata.optimize reads as a chunk size: a number and a decimal unit, "64MB", "1.5gb", "512k".
_CHUNK_BYTES = re.compile(r"\s*\d+(\.\d+)?\s*(tb|gb|mb|kb|t|g|m|k|b)\s*", re.IGNORECASE)


def total_memory_bytes() -> int | None:
    """This machine's RAM, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Storage:
    """What `data.storage` and its keys ask for."""

    mode: str = "memory"
    memory_budget: float = 0.25  # `auto`: a share of RAM (<= 1) or bytes (> 1)
    cache_dir: str | None = None  # the keyed stream caches go under <cache_dir>/stream
    stream_dir: str | None = None  # where the chunks are written and read (a local path or s3://...); None: the cache
    chunk_bytes: str = "64MB"
    optimize_workers: int | None = None  # processes that decode while optimizing; None: one per CPU

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"data.storage={self.mode!r} is not one of {', '.join(MODES)}: use data.storage=memory, stream or auto")
        budget = self.memory_budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
            raise ConfigError(
                f"data.memory_budget={budget!r} is not a positive number: give a share of RAM (e.g. 0.25) or bytes (e.g. 8e9)"
            )
        if not _CHUNK_BYTES.fullmatch(str(self.chunk_bytes)):
            raise ConfigError(f"data.stream.chunk_bytes={self.chunk_bytes!r} is not a size: give a number and a unit, e.g. 64MB or 1GB")
        if self.optimize_workers is not None and (isinstance(self.optimize_workers, bool) or int(self.optimize_workers) < 1):
            raise ConfigError(f"data.stream.optimize_workers={self.optimize_workers!r}: give a whole number >= 1, or null for one per CPU")

    def budget_bytes(self) -> float:
        if self.memory_budget > 1:
            return float(self.memory_budget)
        total = total_memory_bytes()
        if total is None:
            raise ConfigError(
                "data.memory_budget is a share of RAM, and this OS does not say how much RAM there is: give bytes instead (e.g. data.memory_budget=8e9)"
            )
        return self.memory_budget * total

    def streams(self, estimated_bytes: int, what: str) -> bool:
        """Whether to stream `what` (a source's images), given the bytes they would hold in memory."""
        if self.mode != "auto":
            return self.mode == "stream"
        budget = self.budget_bytes()
        chosen = estimated_bytes > budget
        log.info("data.storage=auto: %s would hold %s in memory, %s the budget of %s (data.memory_budget=%g): %s",
                 what, human_bytes(estimated_bytes), "over" if chosen else "within", human_bytes(budget),
                 self.memory_budget, "streaming" if chosen else "in memory")
        return chosen

    def cache_root(self) -> Path:
        if not self.cache_dir:
            raise ConfigError("data.storage=stream needs paths.cache_dir (where the optimized chunks are kept): set paths.cache_dir=<folder>")
        return Path(self.cache_dir).expanduser() / "stream"
