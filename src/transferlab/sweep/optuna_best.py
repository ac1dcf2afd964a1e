"""The best trial of an Optuna sweep: which job it was, its full config, how to run it again.

hydra-optuna-sweeper 1.3 ends a sweep by logging the best parameters and writing
``optimization_results.yaml`` (``best_params``, ``best_value``) into the sweep dir. That names
the searched values only: not the job that produced them, the rest of its config, or its test
accuracy. :class:`BestTrialCallback` (``configs/hparams_search/optuna.yaml``) adds, in the sweep
dir:

- ``best_trial.yaml``: best value and params, the job number and dir, the job's overrides, its
  val and test accuracy (from its ``metrics.json``) and a command that reruns it;
- ``best_config.yaml``: a copy of that job's ``.hydra/config.yaml``;

and prints a summary. :func:`find_best_trial` does the matching and is usable on its own.
"""

from __future__ import annotations

import logging
import math
import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from transferlab.config.overrides import read_overrides, same_value, values_of
from transferlab.record import RunRecord, read_record
from transferlab.run_dirs import HYDRA_DIR
from transferlab.sweep.jobs import job_dirs, job_name

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # written by the Optuna sweeper
BEST_TRIAL_FILE = "best_trial.yaml"
BEST_CONFIG_FILE = "best_config.yaml"


def _acc(record: RunRecord | None, split: str) -> float | None:
    values = getattr(record, split) if record is not None else None
    return values.get("acc") if isinstance(values, dict) else None


def _matches(overrides: list[str], params: dict[str, Any]) -> bool:
    values = values_of(overrides)
    return all(k in values and same_value(v, values[k]) for k, v in params.items())


def rerun_command(overrides: list[str]) -> str:
    return " ".join(["python", "train.py", *(shlex.quote(o) for o in overrides)])


def find_best_trial(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The best trial of the sweep in ``sweep_dir``, or None without ``optimization_results.yaml``.

    The job is the one whose overrides carry every best parameter; if several do (a categorical
    space can repeat a trial), the one whose val acc is closest to the best value. ``job`` is
    None when no job dir matches (e.g. a study resumed from storage whose best trial ran in an
    earlier sweep dir).
    """
    sweep_dir = Path(sweep_dir)
    results_path = sweep_dir / RESULTS_FILE
    if not results_path.is_file():
        return None
    results = OmegaConf.to_container(OmegaConf.load(results_path), resolve=True)
    assert isinstance(results, dict)
    if "best_params" not in results:  # multi-objective: a Pareto front, no single best
        return {"results": results, "job": None}
    params = dict(results["best_params"] or {})
    best_value = results.get("best_value")

    candidates = []
    for d in job_dirs(sweep_dir):
        overrides = read_overrides(d) or []  # a job that never started has none
        if _matches(overrides, params):
            record = read_record(d)
            val = _acc(record, "val")
            gap = abs(float(val) - float(best_value)) if val is not None and best_value is not None else math.inf
            candidates.append((gap, d, overrides, record))
    out: dict[str, Any] = {"best_value": best_value, "best_params": params, "job": None}
    if not candidates:
        return out
    _, job_dir, overrides, record = min(candidates, key=lambda c: c[0])
    out.update(
        job=job_name(job_dir, sweep_dir),
        job_dir=str(job_dir.resolve()),
        status=record.status if record is not None else None,
        val_acc=_acc(record, "val"),
        test_acc=_acc(record, "test"),
        overrides=overrides,
        command=rerun_command(overrides),
    )
    return out


def save_best_trial(sweep_dir: str | Path) -> dict[str, Any] | None:
    """Write best_trial.yaml and best_config.yaml into the sweep dir; returns the summary."""
    sweep_dir = Path(sweep_dir)
    best = find_best_trial(sweep_dir)
    if best is None:
        return None
    if best.get("job") is not None:
        config = Path(best["job_dir"]) / HYDRA_DIR / "config.yaml"
        if config.is_file():
            shutil.copyfile(config, sweep_dir / BEST_CONFIG_FILE)
            best["config"] = str((sweep_dir / BEST_CONFIG_FILE).resolve())
    # One line per value (no folding), so the command can be copied from the file as it is.
    text = yaml.safe_dump(best, sort_keys=False, width=math.inf, allow_unicode=True)
    (sweep_dir / BEST_TRIAL_FILE).write_text(text)
    return best


def format_best_trial(best: dict[str, Any], sweep_dir: str | Path) -> str:
    if "best_params" not in best:
        return f"Optuna: multi-objective sweep, Pareto front in {Path(sweep_dir) / RESULTS_FILE}"
    params = " ".join(f"{k}={v}" for k, v in best["best_params"].items())
    lines = [f"Optuna best trial: val acc {best['best_value']}  {params}"]
    if best.get("job") is None:
        lines.append(f"  no job dir under {sweep_dir} has these values (a study resumed from storage?)")
    else:
        test = best.get("test_acc")
        lines.append(f"  job {best['job']}: {best['job_dir']}" + (f"  (test acc {test:.4f})" if test is not None else ""))
        if best.get("config"):
            lines.append(f"  config: {best['config']}")
        lines.append(f"  rerun:  {best['command']}")
    lines.append(f"  saved:  {Path(sweep_dir) / BEST_TRIAL_FILE}")
    return "\n".join(lines)


class BestTrialCallback(Callback):
    """Hydra callback: after an Optuna sweep, save and print its best trial (see module doc)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            best = save_best_trial(sweep_dir)
        except Exception as e:  # a summary must never turn a finished sweep into a failed one
            log.error("could not save the best trial of %s: %s", sweep_dir, e)
            return
        if best is None:
            log.warning("no %s in %s: not an Optuna sweep, or it stopped early", RESULTS_FILE, sweep_dir)
            return
        print(format_best_trial(best, sweep_dir), flush=True)
