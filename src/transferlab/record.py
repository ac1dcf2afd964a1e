"""The run record: `metrics.json`, written by train.py and read by resume, the report, the Optuna
callback and export, all through this one schema.

Schema 1 is the untyped dict of transferlab 0.1 (no "schema" key); schema 2 added no confusion
matrix; schema 3 had no per-class scores, reliability tables or calibration (nor ece, nll and brier
among the metrics). All read as schema 4 with the fields they lack left empty. Keys this version does not know
are kept in `extra`, so a newer file read and written again loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from transferlab.utils.io import atomic_write_json

SCHEMA_VERSION = 4
METRICS_FILE = "metrics.json"

# How a run ended, the record's `status`: it trained what its strategy says (engine/recording.py
# decides), or not; it was stopped by a signal; or it was a debug run (fast_dev_run,
# overfit_batches), which checks a setup and is no result.
COMPLETED, FAILED, INTERRUPTED, DEBUG = "completed", "failed", "interrupted", "debug"


class RecordError(ValueError):
    """A metrics.json that cannot be read as a run record."""


def _from_dict(cls, data: Any):
    """`cls(**data)` for the fields `cls` has; the rest go to its `extra` field."""
    data = dict(data or {}) if isinstance(data, dict) else {}
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    obj = cls(**known)
    obj.extra.update({k: v for k, v in data.items() if k not in names})
    return obj


def _to_dict(obj) -> dict:
    d = asdict(obj)
    extra = d.pop("extra", {})
    return {**d, **extra}


@dataclass
class RunConfig:
    """The config values a table of runs is grouped and compared by."""

    model: str | None = None  # the preset chosen (configs/model/<model>.yaml), else model.name
    model_name: str | None = None  # the timm / HF architecture
    modality: str | None = None  # image | text
    weights: str | None = None
    strategy: str | None = None
    # The strategy's own label for a variant that is another method under the same name (extract's
    # L-BFGS probe): the report shows "<strategy> (<variant>)" as a row of its own.
    variant: str | None = None
    data: str | None = None
    samples_per_class: int | None = None
    train_fraction: float | None = None
    train_size: int | None = None
    image_size: int | None = None
    seed: Any = None  # an int, or the value as given in the record of a run that failed on it
    max_epochs: int | None = None
    lr: float | None = None
    decay: float | None = None
    unfreeze_top: int | None = None
    solver: str | None = None  # extract: sgd (the loop) | lbfgs (the probe)
    strategy_args: dict = field(default_factory=dict)  # the strategy's other knobs (lora's r, l2_sp's alpha...)
    # classify | mlm (continued pre-training alone) | tapt (mlm on the run's texts, then classify); None before it existed.
    task: str | None = None
    # The arm of a tuned comparison (config/tuning.py): default | search | tuned; None outside one.
    tune_arm: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Params:
    total: int | None = None
    trainable: int | None = None  # the most parameters that trained at once
    extra: dict = field(default_factory=dict)


@dataclass
class Timing:
    fit_s: float | None = None
    test_s: float | None = None
    total_s: float | None = None
    train_images_per_s: float | None = None
    features_s: float | None = None  # the feature cache's extraction (strategy=extract, lp_ft)
    extra: dict = field(default_factory=dict)


@dataclass
class RunRecord:
    status: str = COMPLETED
    error: str | None = None
    test: dict = field(default_factory=dict)  # metric name -> value on the test split
    val: dict = field(default_factory=dict)  # ... on validation, for the tested epoch
    params: Params = field(default_factory=Params)
    time: Timing = field(default_factory=Timing)
    config: RunConfig = field(default_factory=RunConfig)
    data_sizes: dict = field(default_factory=dict)
    # Text runs: per split, how many texts data.max_length cut (None for images).
    truncated: dict | None = None
    # What actually trained: optimizer steps per parameter group (the head, backbone.gNN, ...).
    trained: dict | None = None
    weights_loaded: str | None = None
    best_checkpoint: str | None = None  # the checkpoint that was tested
    run_dir: str | None = None
    overrides: list = field(default_factory=list)
    resumed_from: str | None = None  # a checkpoint this run continued from
    reused_from: str | None = None  # auto_resume: the earlier job whose finished results these are
    feature_cache: dict | None = None
    probe: dict | None = None  # the L-BFGS probe's penalty grid and choice
    # The masked-LM pre-training (task=mlm, or task=tapt's first phase): texts, steps, losses before
    # and after, its own time; for tapt also whether the encoder came from the cache.
    mlm: dict | None = None
    # Class imbalance (engine/imbalance.py): the loss and sampler options as set and as used, the
    # data.skew cut, the training pool's class counts and skew; None in records from before it.
    imbalance: dict | None = None
    # The test split's confusion matrix: {"split", "classes", "matrix" (counts, rows the true class),
    # "picture" (its PNG's file name in the run dir, absent when drawing failed)}. None before schema 3.
    confusion: dict | None = None
    # Per split ("val", "test"): one row per class, {"class", "precision", "recall", "f1", "support"}
    # (utils/confusion.py, per_class_scores). None before schema 4.
    per_class: dict | None = None
    # {"bins", "val", "test": {"ece", "table": per bin lower, upper, count, confidence, accuracy},
    # "picture": the test diagram's file name}. None before schema 4.
    reliability: dict | None = None
    # eval.calibrate's result (engine/calibration.py): method, temperature, the split it was fitted
    # on, per split ECE/NLL/Brier before and after, the calibrated checkpoint; None when not asked.
    calibration: dict | None = None
    provenance: dict = field(default_factory=dict)  # code commit, library versions, machine
    schema: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = _to_dict(value) if f.name in ("params", "time", "config") else value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        record = _from_dict(cls, {k: v for k, v in data.items() if k not in ("params", "time", "config")})
        record.params = _from_dict(Params, data.get("params"))
        record.time = _from_dict(Timing, data.get("time"))
        record.config = _from_dict(RunConfig, data.get("config"))
        record.schema = int(data.get("schema", 1) or 1)
        if record.schema == 1 and record.config.solver == "lbfgs" and record.config.variant is None:
            record.config.variant = "lbfgs"  # schema 1 had no variant; the probe was told by its solver
        return record

    @classmethod
    def read(cls, path: str | Path) -> "RunRecord":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RecordError(f"cannot read {path}: {e}") from e
        return cls.from_dict(data)

    def write(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The record in a run directory, or None where there is none or it cannot be read."""
    try:
        return RunRecord.read(Path(run_dir) / METRICS_FILE)
    except RecordError:
        return None
