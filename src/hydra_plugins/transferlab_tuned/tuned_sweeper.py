"""`hydra/sweeper=tuned_compare`: Hydra's side of transferlab.tune.compare.

It expands the grid (the sweeper's `params` and the command line's sweeps, as Hydra's basic
sweeper does), hands each grid point and strategy to TunedCompare, launches the jobs it asks for
through the configured launcher (one device per job with launcher=parallel), and writes the
summary into the sweep dir.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class TunedCompareSweeper(Sweeper):
    def __init__(self, strategies: Sequence[str], trials: int, seeds: Sequence[int], params: dict | None = None,
                 batch_size: int = 1, sampler_seed: int = 0, startup_trials: int | None = None):
        self.strategies = [str(s) for s in strategies]
        self.trials = int(trials)
        self.seeds = [int(s) for s in seeds]
        self.params = dict(params or {})
        self.batch_size = int(batch_size)
        self.sampler_seed = int(sampler_seed)
        self.startup_trials = startup_trials
        self.config = self.launcher = self.hydra_context = None
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from transferlab.errors import ConfigError
        from transferlab.finetune.strategies import STRATEGIES
        from transferlab.tune.compare import TunedCompare
        from transferlab.tune.summary import write_summary

        grid, strategies = self._grid(arguments)
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise ConfigError(f"experiment=tuned_compare: unknown strategy {', '.join(unknown)}: choose from "
                              f"{', '.join(sorted(STRATEGIES))} (hydra.sweeper.strategies or strategy=a,b,...)")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        compare = TunedCompare(strategies, self.trials, self.seeds, self._launch,
                               lambda name: STRATEGIES[name].tuning_space(), batch_size=self.batch_size,
                               sampler_seed=self.sampler_seed, startup_trials=self.startup_trials)
        outcomes = compare.run(grid)
        for path in write_summary(sweep_dir, outcomes, self.trials):
            log.info("tuned comparison: wrote %s", path)
        return outcomes

    def _grid(self, arguments: list[str]) -> tuple[list[list[str]], list[str]]:
        """Every combination of the swept values, less `strategy`, which says the strategies."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        axes: dict[str, list[str]] = {}
        for o in overrides:
            key = o.get_key_element()
            if key.lstrip("+~").startswith("tune."):
                continue  # the sweep's own knobs (tune.trials), not what makes a job the job it is
            axes[key] = ([f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                         else [f"{key}={o.get_value_element_as_str()}"])
        strategies = self.strategies
        if "strategy" in axes:
            strategies = [a.split("=", 1)[1] for a in axes.pop("strategy")]
        return [list(p) for p in itertools.product(*axes.values())], strategies

    def _launch(self, batch: list[list[str]]):
        from transferlab.record import read_record
        from transferlab.tune.compare import JobResult

        returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        results = []
        for overrides, r in zip(batch, returns):
            value = r.return_value if r.status == JobStatus.COMPLETED else None
            # The job's output dir: Hydra's working_dir is the launch dir where jobs do not chdir.
            job_dir = OmegaConf.select(r.hydra_cfg, "hydra.runtime.output_dir") if r.hydra_cfg is not None else None
            record = read_record(job_dir) if job_dir else None
            results.append(JobResult(overrides=list(overrides), value=value, record=record.to_dict() if record else None))
        return results
