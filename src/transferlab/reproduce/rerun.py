"""Re-run published runs at the current commit and set their recorded figures beside the new ones.

Each run goes through train.py in a subprocess (a fresh process, as the sweep that recorded it
had), with its own overrides and its run dir under the output folder; the figures are read back
from the metrics.json it writes. A run that fails keeps its row (status and the error's first
line), so one broken row never hides the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transferlab.errors import OutputError
from transferlab.record import METRICS_FILE
from transferlab.reproduce.sources import RecordedRun, record_figures
from transferlab.utils.io import atomic_write_bytes
from transferlab.utils.provenance import code_state

# Figures closer than this are reported as reproduced: float32 metrics written and read back.
SAME = 1e-6
REPORT_MD = "reproduce.md"
REPORT_JSON = "reproduce.json"
_TRAIN = "from transferlab.train import main; main()"


@dataclass
class Reproduction:
    run: RecordedRun
    run_dir: str  # relative to the output folder, so a committed report names no machine path
    status: str
    seconds: float
    threads: str = "torch default"  # what the re-run used: the record's, OMP_NUM_THREADS's, or torch's own
    figures: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def deltas(self) -> dict[str, float]:
        return {k: self.figures[k] - v for k, v in self.run.figures.items() if k in self.figures}

    def reproduced(self) -> bool:
        """Completed, and every recorded figure is there again within SAME (a figure the re-run no
        longer gives is not reproduced)."""
        deltas = self.deltas()
        return (self.status == "completed" and bool(deltas) and len(deltas) == len(self.run.figures)
                and all(abs(d) <= SAME for d in deltas.values()))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line.split(":")[0]]
    return (errors or lines or ["no output"])[-1][:300]


def prepare_out(out_dir: Path) -> Path:
    """The output folder, emptied if an earlier reproduce wrote it (its report is there); any other
    folder with files in it is refused, so a re-run never reads a stale metrics.json or clobbers a run."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / REPORT_JSON).is_file():
            raise OutputError(f"--out {out_dir} is not empty and not a folder transferlab reproduce wrote: "
                              "pass a new folder")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def threads_used(run: RecordedRun, env: dict[str, str]) -> str:
    if run.threads:
        return f"{run.threads} (recorded)"
    return f"{env['OMP_NUM_THREADS']} (OMP_NUM_THREADS)" if env.get("OMP_NUM_THREADS") else "torch default"


def environment(run: RecordedRun) -> dict[str, str]:
    """The re-run's environment: this one, with torch's threads set to the record's where it names them."""
    env = dict(os.environ)
    if run.threads:
        env.update({"OMP_NUM_THREADS": str(run.threads), "MKL_NUM_THREADS": str(run.threads)})
    return env


def rerun(run: RecordedRun, out_dir: Path, python: str = sys.executable) -> Reproduction:
    run_dir = out_dir / _slug(run.name)
    command = [python, "-c", _TRAIN, *run.overrides, f"hydra.run.dir={run_dir}", "auto_resume=false"]
    env = environment(run)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = round(time.perf_counter() - start, 1)
    (out_dir / f"{_slug(run.name)}.log").write_text(done.stdout + done.stderr)
    metrics = run_dir / METRICS_FILE
    record = json.loads(metrics.read_text()) if metrics.is_file() else {}
    status = record.get("status") or ("completed" if done.returncode == 0 else "failed")
    error = None if status == "completed" else (record.get("error") or _last_error(done.stderr))
    return Reproduction(run=run, run_dir=run_dir.name, status=status, seconds=seconds, threads=threads_used(run, env),
                        figures=record_figures(record),
                        error=error if error is None else str(error).splitlines()[0])


_DASH = "\u2013"


def _cell(value: float | None) -> str:
    return _DASH if value is None else f"{value:.4f}"


def markdown(results: list[Reproduction], commit: dict) -> str:
    head = commit.get("commit") or "unknown"
    lines = ["# Reproduced", "",
             f"Re-run at commit {head[:7]}{' (uncommitted changes)' if commit.get('dirty') else ''}; "
             f"a figure counts as reproduced within {SAME:g}.", "",
             "| run | recorded at | threads | figure | recorded | now | change | seconds (then / now) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        then = f"{(r.run.commit or 'unknown')[:7]}{'+dirty' if r.run.dirty else ''}"
        seconds = f"{_DASH if r.run.seconds is None else f'{r.run.seconds:.0f}'} / {r.seconds:.0f}"
        threads = r.threads
        if r.status != "completed":
            lines.append(f"| {r.run.name} | {then} | {threads} | {r.status} | | | {r.error or ''} | {seconds} |")
            continue
        for key, old in r.run.figures.items():
            new = r.figures.get(key)
            change = _DASH if new is None else ("same" if abs(new - old) <= SAME else f"{new - old:+.4f}")
            lines.append(f"| {r.run.name} | {then} | {threads} | {key} | {_cell(old)} | {_cell(new)} | {change} | {seconds} |")
    return "\n".join(lines) + "\n"


def write_report(results: list[Reproduction], out_dir: Path, repo: str | Path) -> tuple[Path, Path, str]:
    commit = code_state(str(repo))
    text = markdown(results, commit)
    md = atomic_write_bytes(out_dir / REPORT_MD, text.encode())
    payload = {"commit": commit, "runs": [{**asdict(r), "deltas": r.deltas(), "reproduced": r.reproduced()} for r in results]}
    js = atomic_write_bytes(out_dir / REPORT_JSON, (json.dumps(payload, indent=1) + "\n").encode())
    return md, js, text
