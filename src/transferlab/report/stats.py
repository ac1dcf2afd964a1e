"""Is the best strategy's win beyond seed noise? A paired comparison to the runner-up.

Runs of two strategies with the same seed share the data subset, the split and the head's
initialisation, so the per-seed difference removes that shared noise; its mean gets a confidence
interval from the t distribution with n - 1 degrees of freedom (a paired t test). The win is
called beyond noise when the interval excludes zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import pandas as pd
from scipy import stats

from transferlab.config.tuning import DEFAULT_ARM, TUNED_ARM

CONFIDENCE = 0.95
COMPARISON_COLUMNS = ("model", "data", "size", "best", "runner_up", "best_mean", "runner_up_mean",
                      "n_paired", "paired_seeds", "diff_mean", "ci_low", "ci_high", "separable", "verdict")


@dataclass(frozen=True)
class PairedDifference:
    """a − b over the seeds both have."""

    seeds: tuple[str, ...]
    mean: float
    low: float  # the confidence interval; NaN with fewer than 2 seeds
    high: float
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def separable(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], confidence: float = CONFIDENCE) -> PairedDifference:
    """The mean of a[seed] − b[seed] over the seeds both have (values that are NaN do not count)."""
    a, b = pd.Series(a, dtype=float).dropna(), pd.Series(b, dtype=float).dropna()
    seeds = sorted(a.index.intersection(b.index), key=lambda s: (len(str(s)), str(s)))
    diffs = a[seeds] - b[seeds]
    if len(diffs) == 0:
        return PairedDifference((), math.nan, math.nan, math.nan, confidence)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return PairedDifference(tuple(map(str, seeds)), mean, math.nan, math.nan, confidence)
    half = float(stats.t.ppf((1 + confidence) / 2, len(diffs) - 1) * stats.sem(diffs))
    return PairedDifference(tuple(map(str, seeds)), mean, mean - half, mean + half, confidence)


def signed(x: float) -> str:
    """+0.91, −0.80 (a minus sign, as in print)."""
    x = round(x, 2) + 0.0  # no "−0.00"
    return f"{x:+.2f}".replace("-", "\u2212")


def verdict(best: str, other: str, diff: PairedDifference) -> str:
    """One sentence: which of two strategies wins on the seeds both ran, and whether beyond noise.
    `diff` is best − other, best being the higher mean over all its seeds."""
    ci = f"{diff.confidence:.0%}".replace("%", " %")
    if diff.n == 0:
        return f"{best} and {other} are not separable: no seed ran for both"
    if diff.n == 1:
        return f"{best} and {other} are not separable: 1 seed ({signed(diff.mean)})"
    if diff.separable:
        winner, loser, mean, low, high = (best, other, diff.mean, diff.low, diff.high) if diff.mean > 0 \
            else (other, best, -diff.mean, -diff.high, -diff.low)  # the higher mean lost on the paired seeds
        return (f"{winner} beats {loser} by {signed(mean)} points "
                f"({ci} CI {signed(low)} to {signed(high)}, {diff.n} paired seeds)")
    return (f"{best} and {other} are not separable with {diff.n} seeds "
            f"({signed(diff.mean)}, {ci} CI {signed(diff.low)} to {signed(diff.high)})")


def superseded_by_tuned(runs: pd.DataFrame) -> set[str]:
    """The default arms of strategies that also have a tuned arm among `runs`: where a tuned
    comparison ran, the verdict is between tuned arms (and strategies with nothing to tune)."""
    if "tune_arm" not in runs or "strategy_name" not in runs:
        return set()
    tuned = set(runs.loc[runs["tune_arm"] == TUNED_ARM, "strategy_name"])
    return set(runs.loc[(runs["tune_arm"] == DEFAULT_ARM) & runs["strategy_name"].isin(tuned), "strategy"])


def compare(runs: pd.DataFrame, groups: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per (model, data, size): the best strategy (highest test mean), the runner-up, their paired
    test-accuracy difference and the verdict. `runs` and `groups` as summarize.py makes them."""
    rows = []
    ranked = groups[groups["test_mean"].notna()]
    for (model, data, size), g in ranked.groupby(["model", "data", "size"], sort=False):
        here = runs[(runs["model"] == model) & (runs["data"] == data) & (runs["size"] == size)]
        g = g[~g["strategy"].isin(superseded_by_tuned(here))]
        g = g.sort_values(["test_mean", "strategy"], ascending=[False, True], kind="stable")
        best = g.iloc[0]
        row = {"model": model, "data": data, "size": size, "best": best["strategy"], "best_mean": best["test_mean"]}
        if len(g) < 2:
            rows.append({**row, "n_paired": 0, "separable": False, "verdict": f"only {best['strategy']} ran"})
            continue
        other = g.iloc[1]

        def by_seed(strategy: str) -> pd.Series:
            r = here[(here["strategy"] == strategy) & here["seed"].notna()]
            return pd.Series(r["test"].to_numpy(), index=r["seed"].to_numpy(), dtype=float)

        diff = paired_difference(by_seed(best["strategy"]), by_seed(other["strategy"]), confidence)
        rows.append({**row, "runner_up": other["strategy"], "runner_up_mean": other["test_mean"],
                     "n_paired": diff.n, "paired_seeds": ",".join(diff.seeds), "diff_mean": diff.mean,
                     "ci_low": diff.low, "ci_high": diff.high, "separable": diff.separable,
                     "verdict": verdict(best["strategy"], other["strategy"], diff)})
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
