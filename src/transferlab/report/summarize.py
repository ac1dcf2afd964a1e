"""Mean ± std over seeds per (model, data, size, strategy) group, from the jobs that count."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from transferlab.record import COMPLETED
from transferlab.report.columns import is_missing, numeric, text
from transferlab.report.experiments import GROUP_KEYS

RUN_COLUMNS = (*GROUP_KEYS, "size_x", "seed", "test", "val", "ece", "nll", "trainable", "total", "labels", "unlabeled", "time", "code", "env", "modality",
               "strategy_name", "tune_arm")


def completed_runs(jobs: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """One row per counted run (completed, not a duplicate): the group keys as labels, the seed,
    accuracies in percent where the records hold fractions, and the scale applied (100 or 1)."""
    done = jobs[jobs["status"] == COMPLETED]
    if "task" in done:  # a task=mlm run classifies nothing: it has no accuracy to average
        done = done[done["task"].map(lambda t: text(t, missing="")) != "mlm"]
    accuracies = pd.concat([numeric(done, "test.acc"), numeric(done, "val.acc")])
    scale = 100.0 if accuracies.notna().any() and accuracies.max() <= 1.0 else 1.0
    runs = pd.DataFrame({
        **{k: done[k].map(text) for k in ("model", "data", "strategy")},
        "size": done["size"].astype(str) if len(done) else pd.Series(dtype=str),
        "size_x": numeric(done, "size_x"),
        "seed": done["seed"].map(lambda v: None if is_missing(v) else text(v)),  # None: not pairable
        "test": numeric(done, "test.acc") * scale,
        "val": numeric(done, "val.acc") * scale,
        # How far the test probabilities are from the frequencies they claim (NaN before schema 4).
        "ece": numeric(done, "test.ece"),
        "nll": numeric(done, "test.nll"),
        "trainable": numeric(done, "params.trainable"),
        "total": numeric(done, "params.total"),
        # Labelled training examples and the unlabelled pool a run learned from (0: none).
        "labels": numeric(done, "data_sizes.train"),
        # The pool's size as the record holds it: runs since the pool is loaded only for a strategy that learns from it.
        "unlabeled": numeric(done, "data_sizes.unlabeled").fillna(0) if "data_sizes.unlabeled" in done else 0,
        "time": numeric(done, "time.total_s").fillna(numeric(done, "time.fit_s")),
        "code": done["code"].map(lambda c: text(c, missing="unknown")),
        "env": done["env"].map(lambda e: text(e, missing="unknown")) if "env" in done else "unknown",
        # image | text, for the report's wording; records before it existed are images.
        "modality": done["modality"].map(lambda m: text(m, missing="image")) if "modality" in done else "image",
        # The strategy as configured, and the arm of a tuned comparison ("" outside one).
        "strategy_name": done["strategy_name"].map(text) if "strategy_name" in done else done["strategy"].map(text),
        "tune_arm": done["tune_arm"].map(lambda a: text(a, missing="")) if "tune_arm" in done else "",
    }, index=done.index, columns=list(RUN_COLUMNS))
    return runs.reset_index(drop=True), scale


def code_counts(codes: Iterable[str]) -> list[tuple[str, int]]:
    """Each commit with its run count, most runs first."""
    counts = pd.Series(list(codes), dtype=object).value_counts(sort=False).sort_index()
    return [(str(c), int(n)) for c, n in counts.sort_values(ascending=False, kind="stable").items()]


def runs_phrase(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def code_summary(codes: Iterable[str]) -> str:
    """"abc1234" when all runs share one commit, else each with its run count."""
    counts = code_counts(codes)
    if len(counts) <= 1:
        return counts[0][0] if counts else "unknown"
    return ", ".join(f"{code} ({runs_phrase(n)})" for code, n in counts)


def usual_env(runs: pd.DataFrame) -> str | None:
    """The environment most runs share (None without runs): a row from another is marked."""
    counts = code_counts(runs["env"]) if "env" in runs and len(runs) else []
    return counts[0][0] if counts else None


def _seed_order(seed: str) -> tuple[int, str]:
    return (len(seed), seed)  # numeric seeds as numbers: 2 before 10


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """A row per group: seeds, n, test/val accuracy, test ECE and NLL, and time mean ± std (ddof=1), median
    parameter counts, the code commits, and `best` (the highest test mean of its (model, data,
    size), where more than one strategy ran), and `other_env` (a run of the group ran in another
    environment than most runs)."""
    columns = [*GROUP_KEYS, "size_x", "n", "seeds", "test_mean", "test_std", "val_mean", "val_std",
               "ece_mean", "ece_std", "nll_mean", "nll_std", "trainable", "total", "labels", "unlabeled", "time_mean", "time_std", "code", "env", "other_env", "best"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    usual = usual_env(runs)
    by = runs.groupby(list(GROUP_KEYS), sort=False)
    groups = by.agg(
        size_x=("size_x", "first"),
        n=("test", "count"),
        seeds=("seed", lambda s: ",".join(sorted(set(s.dropna()), key=_seed_order))),
        test_mean=("test", "mean"), test_std=("test", "std"),
        val_mean=("val", "mean"), val_std=("val", "std"),
        ece_mean=("ece", "mean"), ece_std=("ece", "std"),
        nll_mean=("nll", "mean"), nll_std=("nll", "std"),
        trainable=("trainable", "median"), total=("total", "median"),
        labels=("labels", "median"), unlabeled=("unlabeled", "median"),
        time_mean=("time", "mean"), time_std=("time", "std"),
        code=("code", code_summary),
        env=("env", code_summary),
        # Some run of the group ran in another environment than most runs of the report.
        other_env=("env", lambda envs: bool((envs != usual).any())),
    ).reset_index()
    groups["_size_order"] = groups["size_x"].fillna(np.inf)
    groups = groups.sort_values(["model", "data", "_size_order", "size", "strategy"], kind="stable")
    where = groups.groupby(["model", "data", "size"])
    best = where["test_mean"].transform("max")
    groups["best"] = (groups["test_mean"] == best) & best.notna() & (where["strategy"].transform("count") > 1)
    return groups.drop(columns="_size_order").reset_index(drop=True)[columns]
