#!/usr/bin/env python
"""The prepared GPU check: `scripts/gpu_check.sh` (`make gpu-check`), one report in under 8 minutes.

Sections (scripts/gpu_check_sections.py), each in a process of its own under its own time budget,
so a section that fails, hangs or runs out of GPU memory costs only its own part of the report:

1. the tests marked `gpu` (`pytest -m gpu`);
2. training throughput of Lite0 at 224 px, batch 256: fp32, bf16, bf16 + channels_last, and
   + torch.compile, each through transferlab's pipeline against the model alone;
3. `launcher=parallel` with 3 jobs and 3 workers on 1 GPU: the device pool must serialise them;
4. the full Fashion-MNIST training set with Lite0 `partial`, test accuracy on the 10k test set.

The report (docs/benchmarks_gpu.md by default, --out) is rewritten after every section, so an
outside kill leaves the sections done so far. `--smoke` runs every section with tiny sizes on the
CPU (tests/test_gpu_check.py): it checks the script, not the GPU, and writes to logs/ by default.
Exit status 0 when every section passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_check_sections import SECTIONS, TITLES, add_size_options, sizes  # noqa: E402

HARD_LIMIT_S = 480  # the whole check on one GPU, start to report
STARTUP_RESERVE_S = 10  # the driver's own start and the last report write


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_size_options(p)
    p.add_argument("--out", default=None, help="the report; default docs/benchmarks_gpu.md (logs/gpu_check_smoke.md with --smoke)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"which to run, of {','.join(SECTIONS)}")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"the whole run's limit; default {HARD_LIMIT_S - STARTUP_RESERVE_S} (with --smoke: the sum of the section budgets)")
    return p.parse_args(argv)


def _passthrough(args: argparse.Namespace) -> list[str]:
    """The size options again, for the section processes."""
    out = ["--data-root", args.data_root, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--fmnist-epochs", str(args.fmnist_epochs), "--fmnist-batch-size", str(args.fmnist_batch_size)]
    if args.fmnist_image_size is not None:
        out += ["--fmnist-image-size", str(args.fmnist_image_size)]
    return out + (["--smoke"] if args.smoke else [])


def run_section(name: str, args: argparse.Namespace, timeout_s: float, say) -> dict:
    with tempfile.TemporaryDirectory(prefix="transferlab-gpu-check-") as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, str(ROOT / "scripts" / "gpu_check_sections.py"), name, "--result", str(result_path),
               "--budget-s", f"{timeout_s:.0f}", *_passthrough(args)]
        t0 = time.perf_counter()
        # Its own process group: a timeout ends the section's children too (pytest, the sweep's workers).
        # This checkout's code in every process below, whatever checkout the environment installed.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
        if args.smoke:
            # One thread: the smoke run measures nothing, and on a busy CPU a team of OpenMP threads
            # waiting on each other's descheduled members makes tiny steps take seconds.
            env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            output, _ = proc.communicate()
            timed_out = True
        _kill_group(proc.pid)  # anything the section left running, before the next one starts
        seconds = time.perf_counter() - t0
        if result_path.exists():
            result = json.loads(result_path.read_text())
            if timed_out:  # what the section saved before its time ran out
                result["status"] = "failed"
                result["verdict"] = f"timed out after {timeout_s:.0f} s (its budget); {result['verdict']}"
        else:
            why = f"timed out after {timeout_s:.0f} s (its budget)" if timed_out else f"exited {proc.returncode} without a result"
            tail = "\n".join((output or "").strip().splitlines()[-25:])
            result = {"status": "failed", "verdict": why, "markdown": f"{why}; its last output:\n\n```\n{tail}\n```\n", "data": {}}
        result["seconds"] = round(seconds, 1)
        say(f"{name}: {result['status']} in {seconds:.0f} s: {result['verdict']}")
        return result


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def machine_rows() -> list[list[str]]:
    """bench.py's machine table, from a process that imports torch (this one stays light)."""
    code = ("import json, sys; sys.path.insert(0, 'scripts'); sys.path.insert(0, 'src'); import torch, bench; "
            "print(json.dumps(bench.machine_info(torch.get_num_threads())))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        return [[k, str(v)] for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()]
    except Exception as e:  # the report matters more than its header
        return [["machine", f"unknown ({type(e).__name__})"]]


def render(args, results: dict, planned: list[str], machine: list[list[str]], started: float) -> str:
    from bench import table

    mode = ("**Smoke mode**: tiny sizes on the CPU; it shows that every section runs, its numbers measure nothing."
            if args.smoke else "One GPU, the sizes below.")
    summary = [[TITLES[n], results[n]["status"] if n in results else "not run yet", results.get(n, {}).get("seconds", ""),
                results.get(n, {}).get("verdict", "")] for n in planned]
    parts = [
        "# GPU check", "",
        f"Written by `scripts/gpu_check.sh` (`make gpu-check`) in {time.perf_counter() - started:.0f} s: "
        f"`python scripts/gpu_check.py {' '.join(sys.argv[1:])}`. {mode} Each section runs in its own process "
        "under its own time budget; a failed one leaves the others' results.", "",
        table(["", ""], machine), "",
        table(["section", "status", "s", "result"], summary), "",
    ]
    for n in planned:
        if n in results:
            parts += [f"## {TITLES[n]}", "", f"Status: **{results[n]['status']}** ({results[n]['seconds']} s). {results[n]['verdict']}.", "",
                      results[n]["markdown"]]
    return "\n".join(parts)


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a kill mid-write leaves the previous report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    planned = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = sorted(set(planned) - set(SECTIONS))
    if unknown:
        print(f"error: --sections: no such section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    budgets = sizes(args.smoke, args).budgets
    total = args.budget_s or (sum(budgets.values()) if args.smoke else HARD_LIMIT_S - STARTUP_RESERVE_S)
    out = Path(args.out or (ROOT / "logs" / "gpu_check_smoke.md" if args.smoke else ROOT / "docs" / "benchmarks_gpu.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    deadline = started + total

    def say(msg: str) -> None:
        print(f"[gpu check {time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    machine = machine_rows()
    results: dict[str, dict] = {}
    for name in planned:
        left = deadline - time.perf_counter()
        if left < 10:
            results[name] = {"status": "not run", "verdict": f"the run's {total:.0f} s were spent", "markdown": "", "seconds": 0}
        else:
            say(f"{name}: starting, budget {min(budgets[name], left):.0f} s")
            results[name] = run_section(name, args, min(budgets[name], left), say)
        _write(out, render(args, results, planned, machine, started))  # after every section
    say(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
