"""Learning-rate multipliers as pure functions of the optimizer step: resume and the LR finder need
no scheduler state, and every group's lr at every step follows from the config alone."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    """How steps map to epochs in this run, and optim's schedule settings."""

    steps_per_epoch: int
    total_steps: int
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps_per_epoch", max(1, int(self.steps_per_epoch)))
        object.__setattr__(self, "total_steps", max(1, int(self.total_steps)))

    def epoch(self, step: int) -> float:
        return step / self.steps_per_epoch


def warmup_cosine(step: int, clock: Clock) -> float:
    """optim's schedule: linear warm-up over optim.warmup_epochs, then cosine (or constant) down to
    optim.min_lr_ratio at the last step."""
    warmup = clock.warmup_epochs * clock.steps_per_epoch
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if clock.schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1.0, clock.total_steps - warmup))
    lo = clock.min_lr_ratio
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))


def one_cycle(step: int, start: int, end: int, pct_start: float, div: float, div_final: float) -> float:
    """fastai's one-cycle for the steps [start, end): cosine from 1/div up to 1 over the first
    pct_start of them, then cosine down to 1/div_final; 0 outside."""
    if step < start or step >= end:
        return 0.0
    n = max(1, end - start)
    t = (step - start) / n
    up = max(pct_start, 1e-8)

    def cos_interp(a: float, b: float, x: float) -> float:
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * x))

    if t < up:
        return cos_interp(1 / div, 1.0, t / up)
    return cos_interp(1.0, 1 / div_final, (t - up) / max(1e-8, 1 - up))
