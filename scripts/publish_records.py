"""Copy a sweep's run records (metrics.json) under docs/results/<table>/, so a published figure has
its record committed beside it.

    python scripts/publish_records.py logs/<task>/multiruns/<time> docs/results/ranking/finetuned/pretrained

Each job's metrics.json goes to OUT/<job>/metrics.json whole, with every path inside the job's own
run dir made relative to it (the checkpoint it tested, the run dir itself). A job from a tree with
uncommitted changes is refused: published numbers need committed code. Any other absolute path
left in a record (a data folder outside the run, say) is refused too, so no machine path is
published; tools that read run dirs (transferlab report, rank --against) read the copies as they
read the originals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS = "metrics.json"
MACHINE_ROOTS = ("/tmp/", "/work/", "/home/", "/root/", "/mnt/", "/scratch/", "/Users/")


def _relative(value, run_dir: str):
    if isinstance(value, dict):
        return {k: _relative(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, run_dir) for v in value]
    if isinstance(value, str) and (value == run_dir or value.startswith(run_dir + "/")):
        return value[len(run_dir) + 1:] or "."
    return value


def _machine_paths(value) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _machine_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _machine_paths(v)]
    return [value] if isinstance(value, str) and value.startswith(MACHINE_ROOTS) else []


def publish(sweep: Path, out: Path) -> list[Path]:
    jobs = sorted((p.parent for p in sweep.glob(f"*/{METRICS}")), key=lambda p: p.name)
    if not jobs:
        raise SystemExit(f"{sweep} holds no <job>/{METRICS}: pass a sweep dir train.py -m wrote")
    written = []
    for job in jobs:
        record = json.loads((job / METRICS).read_text())
        code = (record.get("provenance") or {}).get("code") or {}
        if code.get("dirty") is not False or not code.get("commit"):
            raise SystemExit(f"{job}: ran on uncommitted code ({code}): re-run it on a clean tree before publishing")
        record = _relative(record, str(job.resolve()))
        left = _machine_paths(record)
        if left:
            raise SystemExit(f"{job}/{METRICS} names {left[0]}: a published record holds no machine path")
        target = out / job.name / METRICS
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1) + "\n")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    written = publish(args.sweep, args.out)
    print(f"wrote {len(written)} records under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
