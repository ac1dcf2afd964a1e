"""The runs a published table was built from, read back as what re-running one needs: its overrides,
the figures it recorded and the commit it ran on.

Three shapes are published under docs/results/: a report's results.csv (one row per run, its
overrides in a column), a folder of compact records (records/<job>.json of a tuned comparison,
<arm>_seed<n>.json of the imbalance table) and a single record or metrics.json. A folder is read
as whichever of them it holds.
"""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.record import METRICS_FILE

RESULTS_CSV = "results.csv"
# The figures compared, as (split, metric): the record's keys, and a results.csv's "<split>.<metric>".
FIGURES = (("test", "acc"), ("test", "f1_macro"), ("test", "ece"), ("val", "acc"))
# Overrides that say how or where a job ran, never what it computed: a single re-run drops them.
_PLACEMENT = ("hydra.", "launcher=", "auto_resume=", "paths.", "hydra/")


@dataclass(frozen=True)
class RecordedRun:
    """One published run: where it is published, how to run it again, what it gave."""

    name: str
    overrides: tuple[str, ...]
    figures: dict[str, float] = field(default_factory=dict)
    commit: str | None = None
    dirty: bool | None = None
    seconds: float | None = None
    completed: bool = True
    # torch's intra-op threads when it ran: the order of float sums follows them, so a re-run with
    # other threads gives other last digits (a parallel sweep's jobs get fewer threads than a run).
    threads: int | None = None


def rerun_overrides(overrides) -> tuple[str, ...]:
    return tuple(o for o in overrides if not any(o.lstrip("+~").startswith(p) for p in _PLACEMENT))


def _float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def _overrides_of(record: dict, where: str) -> tuple[str, ...]:
    if record.get("overrides"):
        return rerun_overrides(record["overrides"])
    command = record.get("command")
    if command:
        words = shlex.split(command)
        while words and not ("=" in words[0] and not words[0].startswith("-")):
            words.pop(0)  # "python train.py" and any flags before the first override
        return rerun_overrides(words)
    raise ConfigError(f"{where} names no overrides and no command, so it cannot be re-run: pass a metrics.json, "
                      "a compact record (docs/results/<table>/...) or a results.csv row")


def _int(value) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def record_figures(record: dict) -> dict[str, float]:
    """The FIGURES a record (metrics.json or a compact one) holds, as "<split>.<metric>": value."""
    return {f"{s}.{m}": v for s, m in FIGURES if (v := _float((record.get(s) or {}).get(m))) is not None}


def from_record(record: dict, name: str, where: str) -> RecordedRun:
    code = record.get("code") or (record.get("provenance") or {}).get("code") or {}
    machine = record.get("machine") or (record.get("provenance") or {}).get("machine") or {}
    return RecordedRun(name=name, overrides=_overrides_of(record, where), figures=record_figures(record), commit=code.get("commit"),
                       dirty=code.get("dirty"), seconds=_float((record.get("time") or {}).get("total_s")),
                       completed=record.get("status", "completed") == "completed", threads=_int(machine.get("torch_threads")))


def from_csv_row(row: dict, name: str) -> RecordedRun:
    figures = {f"{s}.{m}": v for s, m in FIGURES if (v := _float(row.get(f"{s}.{m}"))) is not None}
    dirty = row.get("provenance.code.dirty")
    return RecordedRun(name=name, overrides=rerun_overrides(row["overrides"].split()), figures=figures,
                       commit=row.get("provenance.code.commit") or None,
                       dirty=None if dirty in (None, "") else dirty == "True",
                       seconds=_float(row.get("time.total_s")), completed=row.get("status") == "completed",
                       threads=_int(row.get("provenance.machine.torch_threads")))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the record {path} ({e}): pass a metrics.json or a published record") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a run record (a JSON object): pass a metrics.json or a published record")
    return data


def _read_csv(path: Path) -> list[RecordedRun]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "overrides" not in rows[0]:
        raise ConfigError(f"{path} has no overrides column, so its rows cannot be re-run: pass a results.csv "
                          "that transferlab report wrote")
    table = path.parent.name
    return [from_csv_row(row, f"{table}/{row.get('job') or i}") for i, row in enumerate(rows) if row.get("overrides")]


def _is_record(data: dict) -> bool:
    return "overrides" in data or "command" in data


def recorded_runs(target: str | Path) -> list[RecordedRun]:
    """Every re-runnable run that TARGET publishes, in the order it lists them."""
    path = Path(target)
    if path.is_dir():
        if (path / RESULTS_CSV).is_file():
            return _read_csv(path / RESULTS_CSV)
        if (path / METRICS_FILE).is_file():
            return [from_record(_read_json(path / METRICS_FILE), path.name, str(path / METRICS_FILE))]
        files = sorted((path / "records").glob("*.json")) or sorted(path.glob("*.json"))
        runs = [from_record(data, f"{path.name}/{p.stem}", str(p)) for p in files if _is_record(data := _read_json(p))]
        if not runs:
            raise ConfigError(f"{path} holds no results.csv, metrics.json or records: pass a published table's "
                              "folder (docs/results/<table>), a results.csv or a record")
        return runs
    if not path.is_file():
        raise ConfigError(f"{target}: no such file or folder; pass a published table's folder (docs/results/<table>), "
                          "a results.csv or a record")
    if path.suffix == ".csv":
        return _read_csv(path)
    return [from_record(_read_json(path), path.stem if path.name != METRICS_FILE else path.parent.name, str(path))]


def cheapest(runs: list[RecordedRun]) -> RecordedRun:
    """The completed run that took the least time when it was recorded (the cheapest check of a table)."""
    done = [r for r in runs if r.completed]
    if not done:
        raise ConfigError("none of its runs completed, so none has figures to reproduce")
    return min(done, key=lambda r: (r.seconds is None, r.seconds or 0.0))
