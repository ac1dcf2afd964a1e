"""The tuned comparison: every strategy gets the same search budget on validation, then its chosen
settings are re-run over the seeds and tested once each.

For each point of the sweep's grid (a training-set size, a model...) and each strategy:

1. the default arm: the strategy's own settings over the seeds (`tune.arm=default`), tested;
2. the search: `trials` Optuna (TPE) trials over the strategy's space (finetune/search_space.py),
   each a job with `tune.arm=search test=false` on the first seed, scored by validation accuracy,
   its test split sealed (data/sealed.py);
3. the tuned arm: the best trial's settings over the seeds (`tune.arm=tuned`), tested.

A strategy with nothing to search (a classical baseline that picks its penalty on validation
itself) has one arm: its default runs stand for it as tuned.

Resuming: every job runs with auto_resume=true, so a job launched again with the overrides of
one that finished reuses its record instead of training. The sampler is seeded and told the same
values in the same order, so a relaunched sweep asks the same trials again, finds them finished,
and goes on from the first one that was not: completed trials are not re-run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from transferlab.config.tuning import DEFAULT_ARM, SEARCH_ARM, TUNED_ARM
from transferlab.finetune.search_space import Distribution, override_value

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    overrides: list[str]
    value: float | None  # the job's validation accuracy; None: it failed
    record: dict | None = None  # its metrics.json, when it wrote one


Launch = Callable[[list[list[str]]], list[JobResult]]


@dataclass
class ArmRun:
    seed: int
    val: float | None
    test: float | None
    run_dir: str | None = None

    @classmethod
    def of(cls, seed: int, result: JobResult) -> "ArmRun":
        record = result.record or {}
        return cls(seed=seed, val=(record.get("val") or {}).get("acc", result.value),
                   test=(record.get("test") or {}).get("acc"), run_dir=record.get("run_dir"))


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    val: float | None  # None: the trial failed (a diverging lr, an unfreeze_top the backbone lacks)
    run_dir: str | None = None


@dataclass
class StrategyOutcome:
    grid: list[str]  # the grid point's overrides
    strategy: str
    space: dict[str, str]  # key -> its distribution, described
    trials: list[Trial] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the chosen settings; None: nothing to search, or every trial failed
    default: list[ArmRun] = field(default_factory=list)
    tuned: list[ArmRun] = field(default_factory=list)

    @property
    def searched(self) -> bool:
        return bool(self.space)


def arm_overrides(grid: Sequence[str], strategy: str, arm: str, seed: int, params: dict[str, Any] | None = None) -> list[str]:
    """One job's overrides. Written the same way every time for the same job, since a relaunched
    sweep recognises its finished jobs by them (engine/resume.py)."""
    extra = [f"{k}={override_value(v)}" for k, v in sorted((params or {}).items())]
    tail = ["test=false"] if arm == SEARCH_ARM else []
    return [*grid, f"strategy={strategy}", f"seed={seed}", f"tune.arm={arm}", *extra, *tail, "auto_resume=true"]


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The completed trial of the highest validation accuracy, the earliest among equals."""
    done = [t for t in trials if t.val is not None and math.isfinite(t.val)]
    return max(done, key=lambda t: (t.val, -t.number)) if done else None


class TunedCompare:
    def __init__(self, strategies: Sequence[str], trials: int, seeds: Sequence[int], launch: Launch,
                 spaces: Callable[[str], dict[str, Distribution]], batch_size: int = 1, sampler_seed: int = 0,
                 startup_trials: int | None = None):
        if trials < 1:
            raise ValueError(f"tune.trials={trials}: at least 1 trial per strategy")
        if not seeds:
            raise ValueError("no seeds to re-run the chosen settings over")
        self.strategies = list(strategies)
        self.trials = trials
        self.seeds = [int(s) for s in seeds]
        self.launch = launch
        self.spaces = spaces
        self.batch_size = max(1, int(batch_size))
        self.sampler_seed = sampler_seed
        # Random trials before TPE models the history: a third of the budget, as optuna's own default
        # (10 of a typical 30) would leave a budget of 8 all random.
        self.startup_trials = startup_trials if startup_trials is not None else max(1, trials // 3)

    def run(self, grid_points: Sequence[Sequence[str]]) -> list[StrategyOutcome]:
        outcomes = []
        for grid in grid_points:
            for strategy in self.strategies:
                outcomes.append(self.run_strategy(list(grid), strategy))
        return outcomes

    def run_strategy(self, grid: list[str], strategy: str) -> StrategyOutcome:
        space = self.spaces(strategy)
        outcome = StrategyOutcome(grid=grid, strategy=strategy, space={k: d.describe() for k, d in space.items()})
        where = " ".join([*grid, f"strategy={strategy}"])
        log.info("tuned comparison: %s, default arm over seeds %s", where, self.seeds)
        outcome.default = self._arm(grid, strategy, DEFAULT_ARM, None)
        if not space:
            log.info("tuned comparison: %s has nothing to search; its default runs stand as tuned", where)
            return outcome
        outcome.trials = self._search(grid, strategy, space)
        best = best_trial(outcome.trials)
        if best is None:
            log.warning("tuned comparison: every trial of %s failed; no tuned arm", where)
            return outcome
        outcome.best = dict(best.params)
        log.info("tuned comparison: %s chose %s (val acc %.4f, trial %d)", where, outcome.best, best.val, best.number)
        outcome.tuned = self._arm(grid, strategy, TUNED_ARM, outcome.best)
        return outcome

    def _arm(self, grid, strategy, arm, params) -> list[ArmRun]:
        jobs = [arm_overrides(grid, strategy, arm, seed, params) for seed in self.seeds]
        return [ArmRun.of(seed, r) for seed, r in zip(self.seeds, self.launch(jobs))]

    def _search(self, grid, strategy, space: dict[str, Distribution]) -> list[Trial]:
        import optuna  # the sweep's own dependency; the rest of transferlab runs without it
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.sampler_seed, n_startup_trials=self.startup_trials)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        found: list[Trial] = []
        while len(found) < self.trials:
            asked = [study.ask() for _ in range(min(self.batch_size, self.trials - len(found)))]
            params = [{key: dist.suggest(t, key) for key, dist in space.items()} for t in asked]
            results = self.launch([arm_overrides(grid, strategy, SEARCH_ARM, self.seeds[0], p) for p in params])
            for t, p, r in zip(asked, params, results):
                ok = r.value is not None and math.isfinite(r.value)
                study.tell(t, r.value if ok else None, state=TrialState.COMPLETE if ok else TrialState.FAIL)
                found.append(Trial(number=len(found), params=p, val=r.value if ok else None,
                                   run_dir=(r.record or {}).get("run_dir")))
        return found
