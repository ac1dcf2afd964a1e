"""Gather the ``metrics.json`` of every run under some directories into tables and plots.

``transferlab report <dir> [<dir> ...] [--out OUT]`` writes into OUT (default: the first dir):

- ``results.csv``: one row per job (completed, duplicate, failed, interrupted or unfinished);
- ``comparisons.csv``: per (model, data, size) the best strategy, the runner-up, their paired
  difference over shared seeds with its 95 % confidence interval, and the verdict;
- ``results.md``: mean ± std over seeds per (model, data, images per class, strategy), the best
  in bold with its verdict, the code commits, the duplicates and the jobs that did not complete;
  where records hold a test confusion matrix (schema 3), a link to each counted run's picture (its
  run's name where a reader could not follow the link: report/links.py) and the per-class recall
  of each size's best strategy (the matrices stay out of the CSV, which gets the picture's path,
  ``confusion_png``); beside it each run's test ECE and its reliability diagram (schema 4,
  ``reliability_png``); the groups' table has test ECE and NLL mean ± std;
- ``acc_vs_size.png``, ``acc_vs_time.png``, ``params_by_strategy.png``: each strategy one colour
  and marker in every plot, its tuned arm the same ones dashed and hollow (plots.strategy_styles).

Paths in the CSV and markdown are relative to OUT. The steps, one module each: collect (walk the
dirs, one row per job; experiments tells which jobs are one experiment), summarize (groups),
stats (paired comparisons), markdown, plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from transferlab.record import METRICS_FILE
from transferlab.report import plots
from transferlab.report.collect import IN_MEMORY, NoRunsError, collect
from transferlab.report.markdown import render_markdown
from transferlab.report.portable import portable, relative
from transferlab.report.stats import compare, paired_difference, verdict
from transferlab.report.summarize import completed_runs, summarize

__all__ = ["Report", "NoRunsError", "collect", "compare", "completed_runs", "paired_difference",
           "summarize", "verdict", "write_report"]


@dataclass
class Report:
    out_dir: Path
    jobs: pd.DataFrame  # one row per job, paths as found (absolute)
    runs: pd.DataFrame  # the runs that count: completed, one per seed and group
    groups: pd.DataFrame
    comparisons: pd.DataFrame
    scale: float  # 100 where accuracies were recorded as fractions
    figures: dict[str, Figure] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return self.jobs["status"].value_counts().to_dict() if len(self.jobs) else {}


def write_report(dirs: Sequence[str | Path], out: str | Path | None = None) -> Report:
    if not dirs:
        raise NoRunsError("no directories given: pass the run or multirun directories train.py wrote")
    out_dir = Path(out if out is not None else dirs[0])
    jobs = collect(dirs)
    if jobs.empty:
        raise NoRunsError(
            f"no runs under {', '.join(map(str, dirs))}: no {METRICS_FILE} and no Hydra job dir (.hydra/) there; "
            "pass the run or multirun directory train.py wrote, e.g. logs/train/multiruns/<date>"
        )
    runs, scale = completed_runs(jobs)
    groups = summarize(runs)
    comparisons = compare(runs, groups)
    styles = plots.strategy_styles(runs["strategy"])  # one look per strategy across the report's plots
    figures = {
        "acc_vs_size": plots.acc_vs_size(groups, scale, styles),
        "acc_vs_time": plots.acc_vs_time(groups, runs, scale, styles),
        "params_by_strategy": plots.params_by_strategy(runs),
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    shown = portable(jobs, out_dir)
    files = [out_dir / "results.csv", out_dir / "comparisons.csv", out_dir / "results.md"]
    shown.drop(columns=[c for c in IN_MEMORY if c in shown.columns]).to_csv(files[0], index=False)
    comparisons.to_csv(files[1], index=False)
    sources = [relative(str(d), out_dir) for d in dirs]
    files[2].write_text(render_markdown(shown, runs, groups, comparisons, scale, sources, out_dir=out_dir))
    files += [plots.save(fig, out_dir / f"{name}.png") for name, fig in figures.items()]
    return Report(out_dir=out_dir, jobs=jobs, runs=runs, groups=groups, comparisons=comparisons, scale=scale,
                  figures=figures, files=files)
