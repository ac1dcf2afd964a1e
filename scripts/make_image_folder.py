#!/usr/bin/env python
"""Write an image folder (root/<class>/<image>) for the storage benchmarks, offline and deterministic.

    python scripts/make_image_folder.py fashion --out /tmp/fmnist50k --count 50000 --size 256
    python scripts/make_image_folder.py digits --out /tmp/digits

`fashion`: Fashion-MNIST training images (Debian's dataset-fashion-mnist, or --fashion-root),
enlarged to --size px (bicubic) and tinted with two colours drawn per image, so the folder holds
RGB JPEGs of photo-like size and a learnable label; `digits`: scikit-learn's 1,797 8x8 digits as
grey PNGs, the folder whose in-memory size right-sizing is measured on. The images are data for
benchmarks, not for committing.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def fashion(out: Path, count: int, size: int, quality: int, fashion_root: str | None, seed: int) -> int:
    from transferlab.data.sources.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

    train = load_fashion_mnist(fashion_root, download=False).train
    if count > len(train):
        raise SystemExit(f"--count {count} is more than the {len(train)} Fashion-MNIST training images")
    names = [c.replace("/", "-").replace(" ", "_") for c in FASHION_MNIST_CLASSES]
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    colours = np.random.default_rng(seed).integers(0, 256, (count, 2, 3)).astype(np.float32)

    def write(i: int) -> None:
        grey = Image.fromarray(train.images[i, 0].numpy(), "L").resize((size, size), Image.Resampling.BICUBIC)
        a = np.asarray(grey, np.float32)[..., None] / 255.0
        background, ink = colours[i]
        rgb = (1 - a) * background + a * ink
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(out / names[int(train.labels[i])] / f"{i:06d}.jpg", quality=quality)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(count)))
    return count


def digits(out: Path) -> int:
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = out / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(img * 255 / 16).astype(np.uint8), "L").save(folder / f"{i:04d}.png")
    return len(d.images)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["fashion", "digits"])
    p.add_argument("--out", required=True, help="the folder to write (created)")
    p.add_argument("--count", type=int, default=50_000, help="fashion: how many images")
    p.add_argument("--size", type=int, default=256, help="fashion: side in px")
    p.add_argument("--quality", type=int, default=90, help="fashion: JPEG quality")
    p.add_argument("--fashion-root", default=None, help="fashion: folder of the Fashion-MNIST IDX files (default: Debian's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"--out {out} is not empty: give a new folder")
    n = fashion(out, args.count, args.size, args.quality, args.fashion_root, args.seed) if args.kind == "fashion" else digits(out)
    print(f"wrote {n} images to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
