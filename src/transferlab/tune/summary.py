"""What a tuned comparison found, written into its sweep dir: tuning.json (every trial and run)
and tuning.md (per strategy the default and the tuned result side by side, the chosen settings,
and per grid point the verdict on the default arms and on the tuned arms, each with its paired CI)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from transferlab.config.tuning import TUNING_JSON, TUNING_MARKDOWN
from transferlab.report.stats import paired_difference, verdict
from transferlab.tune.compare import ArmRun, StrategyOutcome, Trial

JSON_FILE, MARKDOWN_FILE = TUNING_JSON, TUNING_MARKDOWN


def _percent(values: Sequence[float | None]) -> list[float]:
    return [100 * v for v in values if v is not None and math.isfinite(v)]


def mean_sd(values: Sequence[float | None]) -> str:
    """"62.90 ± 1.20 (3)" in percent over the seeds that have a value; "–" where none has."""
    xs = _percent(values)
    if not xs:
        return "\u2013"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.2f} \u00b1 {sd:.2f} ({len(xs)})"


def tuned_runs(o: StrategyOutcome) -> list[ArmRun]:
    """The runs that stand for the strategy tuned: its tuned arm, or its default one where it had
    nothing to search."""
    return o.tuned if o.searched else o.default


def _by_seed(runs: Sequence[ArmRun]) -> dict[str, float]:
    return {str(r.seed): 100 * r.test for r in runs if r.test is not None and math.isfinite(r.test)}


def arm_verdict(outcomes: Sequence[StrategyOutcome], arm: str) -> tuple[str | None, str]:
    """(the best strategy, the verdict against the runner-up) on one arm of one grid point."""
    runs = {o.strategy: (tuned_runs(o) if arm == "tuned" else o.default) for o in outcomes}
    means = {s: statistics.fmean(v.values()) for s, r in runs.items() if (v := _by_seed(r))}
    if not means:
        return None, "no strategy was tested"
    ranked = sorted(means, key=lambda s: (-means[s], s))
    if len(ranked) == 1:
        return ranked[0], f"only {ranked[0]} was tested"
    best, other = ranked[0], ranked[1]
    return best, verdict(best, other, paired_difference(_by_seed(runs[best]), _by_seed(runs[other])))


def grid_labels(grids: Sequence[Sequence[str]]) -> list[str]:
    """Each grid point by the overrides that tell it from the others (all of them for one point)."""
    varying = [o for o in dict.fromkeys(o for g in grids for o in g) if not all(o in g for g in grids)]
    return [" ".join(o for o in g if o in varying or len(grids) == 1) or "(the sweep's settings)" for g in grids]


def render(outcomes: Sequence[StrategyOutcome], trials: int) -> str:
    lines = [
        "# Tuned comparison",
        "",
        f"Every strategy with a search space had the same budget: {trials} trials chosen on validation accuracy "
        "(the test split sealed), then its best settings re-run over the seeds and tested once each. "
        "Accuracies in percent, mean \u00b1 sd (seeds).",
    ]
    points = list(dict.fromkeys(tuple(o.grid) for o in outcomes))
    labels = dict(zip(points, grid_labels(points)))
    grids: dict[str, list[StrategyOutcome]] = {}
    for o in outcomes:
        grids.setdefault(labels[tuple(o.grid)], []).append(o)
    for label, group in grids.items():
        lines += ["", f"## {label}", "",
                  "| strategy | default val | default test | tuned val | tuned test | trials ok | chosen settings |",
                  "|---|---|---|---|---|---|---|"]
        for o in group:
            tuned = tuned_runs(o)
            ok = sum(t.val is not None for t in o.trials)
            chosen = ", ".join(f"{k}={_short(v)}" for k, v in sorted((o.best or {}).items())) if o.searched else \
                "nothing to search (chooses on validation itself)"
            if o.searched and o.best is None:
                chosen = "every trial failed"
            lines.append(f"| {o.strategy} | {mean_sd([r.val for r in o.default])} | {mean_sd([r.test for r in o.default])} | "
                         f"{mean_sd([r.val for r in tuned])} | {mean_sd([r.test for r in tuned])} | "
                         f"{ok}/{len(o.trials) if o.searched else 0} | {chosen} |")
        d_best, d_verdict = arm_verdict(group, "default")
        t_best, t_verdict = arm_verdict(group, "tuned")
        lines += ["", f"- default arms: {d_verdict}", f"- tuned arms: {t_verdict}"]
        if d_best != t_best:
            lines.append(f"- the verdict changes once every arm is tuned: {d_best} led on defaults, {t_best} leads tuned")
    lines += ["", "Search spaces: " + "; ".join(
        f"{o.strategy}: " + ", ".join(f"{k} {d}" for k, d in o.space.items()) for o in _first_per_strategy(outcomes) if o.space), ""]
    return "\n".join(lines)


def _first_per_strategy(outcomes: Sequence[StrategyOutcome]) -> list[StrategyOutcome]:
    seen: dict[str, StrategyOutcome] = {}
    for o in outcomes:
        seen.setdefault(o.strategy, o)
    return list(seen.values())


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_summary(sweep_dir: str | Path, outcomes: Sequence[StrategyOutcome], trials: int) -> list[Path]:
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    data = {"trials_per_strategy": trials, "outcomes": [asdict(o) for o in outcomes]}
    (sweep_dir / JSON_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n")
    (sweep_dir / MARKDOWN_FILE).write_text(render(outcomes, trials))
    return [sweep_dir / JSON_FILE, sweep_dir / MARKDOWN_FILE]


def load_summary(path: str | Path) -> tuple[list[StrategyOutcome], int]:
    """tuning.json read back as the outcomes and the budget it was written from: render() of them
    gives the sweep's tuning.md again (how a published table is checked against its record)."""
    data = json.loads(Path(path).read_text())
    outcomes = [
        StrategyOutcome(grid=list(o["grid"]), strategy=o["strategy"], space=dict(o["space"]),
                        trials=[Trial(**t) for t in o["trials"]], best=o["best"],
                        default=[ArmRun(**r) for r in o["default"]], tuned=[ArmRun(**r) for r in o["tuned"]])
        for o in data["outcomes"]
    ]
    return outcomes, int(data["trials_per_strategy"])
