"""Comparisons that survive a noisy machine: interleaved repetitions and the median ratio.

One measurement of A followed by one of B reads whatever else the machine did meanwhile as a
difference between A and B. Measured as A B A B ... instead, each pair shares its moment, so the
ratio within a pair cancels most of the drift; the median over pairs, with its min and max, is
what a benchmark reports (scripts/bench.py, scripts/bench_storage.py).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Ratio:
    """A / B over interleaved pairs: the median and the range of the per-pair ratios."""

    median: float
    low: float
    high: float
    pairs: int

    def __str__(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f}, {self.pairs} pairs)"


def ratio(a: list[float], b: list[float]) -> Ratio:
    """The per-pair ratios a[i] / b[i]: measurements taken side by side, in the same round."""
    if len(a) != len(b) or not a:
        raise ValueError(f"{len(a)} and {len(b)} measurements: a ratio needs pairs")
    per_pair = [x / y for x, y in zip(a, b)]
    return Ratio(statistics.median(per_pair), min(per_pair), max(per_pair), len(per_pair))


def interleaved(measures: dict[str, Callable[[], float]], rounds: int, say=print) -> dict[str, list[float]]:
    """Each measurement once per round, in the same order every round: rounds x len(measures) calls.

    Any two of them are then `rounds` side-by-side pairs (`ratio`)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: need at least one")
    out: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(rounds):
        for name, measure in measures.items():
            value = measure()
            out[name].append(value)
            say(f"round {r + 1}/{rounds}: {name} {value:,.1f}")
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)
