"""What a tuning search may vary for a strategy: one distribution per config key.

Each strategy declares its own space (`Strategy.search_space`, keys relative to `strategy.`) for
the knobs that matter to it; every network strategy also searches the optimiser's weight decay
(`SHARED_SPACE`), the two knobs Kornblith et al. (2019) grid-search for every method. The tuned
sweep (sweep/tuned.py) asks Optuna for a value of each and turns the values into overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence


class Distribution(Protocol):
    def suggest(self, trial: Any, key: str) -> Any: ...

    def describe(self) -> str: ...

    def contains(self, value: Any) -> bool: ...


@dataclass(frozen=True)
class LogUniform:
    """A positive float searched on the log scale (learning rates, penalties)."""

    low: float
    high: float

    def __post_init__(self):
        if not 0 < self.low < self.high:
            raise ValueError(f"LogUniform needs 0 < low < high, got {self.low}, {self.high}")

    def suggest(self, trial, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high, log=True)

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"

    def contains(self, value) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"Uniform needs low < high, got {self.low}, {self.high}")

    def suggest(self, trial, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high)

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"

    def contains(self, value) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def suggest(self, trial, key: str) -> int:
        return trial.suggest_int(key, self.low, self.high)

    def describe(self) -> str:
        return f"integer {self.low}..{self.high}"

    def contains(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __init__(self, values: Sequence):
        object.__setattr__(self, "values", tuple(values))

    def suggest(self, trial, key: str):
        return trial.suggest_categorical(key, list(self.values))

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))

    def contains(self, value) -> bool:
        return value in self.values


# Searched for every strategy that trains a network.
SHARED_SPACE: dict[str, Distribution] = {"optim.weight_decay": LogUniform(1e-4, 0.3)}


def override_value(value: Any) -> str:
    """A value as a Hydra override writes it, the same text every time for the same value (a
    relaunched sweep recognises its finished jobs by their overrides)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e6:
            return f"{value:.1f}"
        return repr(value)
    return str(value)
