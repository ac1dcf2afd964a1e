"""Which jobs are runs of the same experiment, so that a table row averages only those.

A row of the report is a (model, data, size, strategy) group. Three rules keep it honest:

- a strategy's variant (extract's L-BFGS probe) is another method: ``extract (lbfgs)``;
- completed jobs of one group that differ in another recorded setting (lr, max_epochs, a strategy
  argument...) are different experiments: the group splits, its label naming the setting,
  ``partial (lr=0.001)``;
- a seed counts once per group: of several completed jobs with the same seed (a finished run that
  was resumed again, a sweep launched twice), the newest counts and the others get status
  ``duplicate``, ``duplicate_of`` naming the one that counts.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

from transferlab.config.tuning import TUNED_ARM
from transferlab.record import COMPLETED
from transferlab.report.columns import is_missing, numeric, text

GROUP_KEYS = ("model", "data", "size", "strategy")
DUPLICATE = "duplicate"
ALL_LABEL = "all"
# Recorded settings that make two runs of one strategy different experiments. `strategy_args.*`
# (the strategy's own knobs: lora's r, l2_sp's alpha) join them. extract's solver is not here: it
# is told apart by its variant.
# `task` tells fine-tuning from MLM-then-fine-tuning (experiment=tapt): "setfit (task=tapt)".
SETTING_KEYS = ("model_name", "weights", "image_size", "max_epochs", "lr", "decay", "unfreeze_top", "task")
STRATEGY_ARGS = "strategy_args."
# The class-imbalance options and data.skew (the record's `imbalance`) change the method or the
# data, so runs that differ in them are other rows too: "partial (logit_adjustment=True)".
IMBALANCE = "imbalance."
IMBALANCE_SETTINGS = ("class_weights", "logit_adjustment", "logit_adjustment_tau", "sampler", "skew")

# Hydra names run and multirun dirs by their start time: ${now:%Y-%m-%d}_${now:%H-%M-%S-%f}.
_RUN_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{2}-\d{2}-\d{2})(?:-(\d{1,6}))?")


def identify(jobs: pd.DataFrame) -> pd.DataFrame:
    """`jobs` with `size`, `size_x`, `strategy` (the row label), `strategy_name` (as configured)
    and duplicates marked. Needs the columns collect() writes."""
    if jobs.empty:
        return jobs
    jobs = add_size(jobs)
    if "task" in jobs:  # records from before `task` existed are classification runs, not another setting
        jobs["task"] = jobs["task"].map(lambda t: "classify" if is_missing(t) else t)
    jobs["strategy_name"] = jobs["strategy"]
    jobs["strategy"] = strategy_labels(jobs)
    return mark_duplicates(jobs)


def add_size(jobs: pd.DataFrame) -> pd.DataFrame:
    """``size``: a label for the training-set size; ``size_x``: images per class, for plots.

    ``samples_per_class`` null means the whole training set ("all", or a fraction of it). Its
    images per class are estimated from train_size, with the class count taken from runs of the
    same data set that did fix samples_per_class; failing that, size_x is left NaN.
    """
    jobs = jobs.copy()
    spc = numeric(jobs, "samples_per_class")
    frac = numeric(jobs, "train_fraction")
    train_size = numeric(jobs, "train_size")
    jobs["size"] = [
        str(int(s)) if not math.isnan(s) else (f"{f:g} of train" if not math.isnan(f) else ALL_LABEL)
        for s, f in zip(spc, frac)
    ]
    data = jobs["data"].map(text)
    classes = (train_size / spc).where(spc > 0).groupby(data).median()
    per_class = train_size / data.map(classes)
    jobs["size_x"] = spc.where(spc.notna(), per_class).astype(float)
    return jobs


def size_phrase(size: str, noun: str = "images") -> str:
    """A size label in a sentence: "10 images/class", "all training images", "0.1 of train"."""
    if size.isdigit():
        return f"{size} {noun}/class"
    return f"all training {noun}" if size == ALL_LABEL else size


def example_noun(runs: pd.DataFrame) -> str:
    """What the runs count per class: images, texts, or examples when they mix."""
    kinds = set(runs["modality"].dropna()) if "modality" in runs else set()
    return {frozenset({"text"}): "texts", frozenset({"image"}): "images"}.get(frozenset(kinds), "examples" if kinds else "images")


def setting_columns(jobs: pd.DataFrame) -> list[str]:
    return [c for c in jobs.columns if c in SETTING_KEYS or c.startswith(STRATEGY_ARGS) or _imbalance_setting(c)]


def _imbalance_setting(column: str) -> bool:
    return column.startswith(IMBALANCE) and column.removeprefix(IMBALANCE).split(".")[0] in IMBALANCE_SETTINGS


def strategy_labels(jobs: pd.DataFrame) -> pd.Series:
    """The row label of each job: ``strategy (variant, setting=value, ...)``, naming the settings
    in which the completed jobs of its (model, data, size, strategy, variant) group differ."""
    base = [text(s) for s in jobs["strategy"]]
    variant = jobs["variant"]
    parts: dict[int, list[str]] = {i: ([] if is_missing(v) else [str(v)]) for i, v in zip(jobs.index, variant)}
    # An encoder pre-trained on the task's texts is another method even where no plain run sits beside it.
    tapt = jobs["task"] == "tapt" if "task" in jobs else pd.Series(False, index=jobs.index)
    for i in jobs.index[tapt.fillna(False).astype(bool)]:
        parts[i].append("task=tapt")
    # A tuned comparison's tuned arm is a row of its own beside the default one; the settings it
    # chose are in the sweep's tuning.md, not the label.
    arm = jobs["tune_arm"].map(lambda a: text(a, missing="")) if "tune_arm" in jobs else pd.Series("", index=jobs.index)
    for i in jobs.index[arm == TUNED_ARM]:
        parts[i].append(TUNED_ARM)

    done = jobs["status"] == COMPLETED
    keys = [jobs[k].map(text) for k in ("model", "data", "size")] + [pd.Series(base, index=jobs.index), variant.map(text), arm]
    settings = setting_columns(jobs)
    for _, group in jobs[done].groupby([k[done] for k in keys], sort=False, dropna=False):
        for col in settings:
            values = group[col].map(lambda v: text(v, missing="none"))
            if values.nunique() > 1:
                name = col.removeprefix(STRATEGY_ARGS).removeprefix(IMBALANCE)
                for i, v in values.items():
                    if f"{name}={v}" not in parts[i]:
                        parts[i].append(f"{name}={v}")
    return pd.Series([f"{b} ({', '.join(parts[i])})" if parts[i] else b for b, i in zip(base, jobs.index)],
                     index=jobs.index, dtype=object)


def run_time(job_dir: str | Path, metrics_path: str | Path | None) -> datetime | None:
    """When a run started, from its Hydra run dir's name (the job dir or the multirun dir above
    it); the metrics.json's modification time where no dir is named by a time."""
    for part in reversed(Path(job_dir).parts):
        m = _RUN_TIME.match(part)
        if m:
            day, clock, micro = m.groups()
            return datetime.strptime(f"{day}_{clock}-{(micro or '0').ljust(6, '0')}", "%Y-%m-%d_%H-%M-%S-%f")
    try:
        return datetime.fromtimestamp(Path(metrics_path).stat().st_mtime) if metrics_path else None
    except OSError:
        return None


def mark_duplicates(jobs: pd.DataFrame) -> pd.DataFrame:
    """Completed jobs that repeat a (group, seed) already counted: status ``duplicate``."""
    jobs = jobs.copy()
    jobs["duplicate_of"] = pd.Series(pd.NA, index=jobs.index, dtype=object)
    done = jobs[(jobs["status"] == COMPLETED) & jobs["seed"].notna()]
    # Newest first; the metrics file's mtime breaks ties between jobs of one multirun.
    order = done.assign(_t=pd.to_datetime(done["run_time"]), _m=done["mtime"]).sort_values(
        ["_t", "_m"], ascending=False, kind="stable", na_position="last")
    keys = [order[k].map(text) for k in (*GROUP_KEYS, "seed")]
    for _, group in order.groupby(keys, sort=False):
        kept, *others = group.index
        jobs.loc[others, "status"] = DUPLICATE
        jobs.loc[others, "duplicate_of"] = jobs.at[kept, "job_dir"]
    return jobs
