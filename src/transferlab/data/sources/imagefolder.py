"""Any ``root/<class>/<image>`` tree, or ``root/train|val|test/<class>/<image>``."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from transferlab.data.arrays import ImageArrays, Splits
from transferlab.data.sources.registry import ROOT_KEY, SourceContext, register
from transferlab.data.subsample import stratified_split
from transferlab.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)


_SPLIT_DIRS = ("train", "val", "test")
_MAX_NAMED = 5  # how many bad files a message names before it just counts


def _visible(p: Path) -> bool:
    # Hidden entries (.DS_Store, AppleDouble ._x.jpg, .ipynb_checkpoints) are never data.
    return not p.name.startswith(".")


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other visible files) under ``folder``; the others are ignored, and counted."""
    out, other = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            (out if is_image else other).append(Path(dirpath) / name)
    return out, other


def _class_dirs(folder: Path, where: str) -> list[Path]:
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not dirs:
        loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = f" (it has {len(loose)} images directly inside)" if loose else ""
        raise DataError(f"{where} '{folder}' has no class folders{hint}: put images in {folder}/<class>/<image>")
    return dirs


def _to_rgb(img):
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey: scale the full 0..65535 range to 0..255 (PIL's own convert clips instead,
        # which turns most 16-bit images white). "I" is what older Pillows give 16-bit PNGs.
        a = np.asarray(img).astype(np.float32)
        a = np.clip(a, 0, 65535) / 257.0
        img = Image.fromarray(np.rint(a).astype(np.uint8), "L")
    elif mode == "F":
        img = Image.fromarray(np.rint(np.clip(np.asarray(img), 0, 255)).astype(np.uint8), "L")
    elif mode == "P" and "transparency" in img.info:
        # Through RGBA: PIL warns when palette transparency is dropped by a direct RGB convert.
        img = img.convert("RGBA")
    # Alpha is dropped, not composited, as torchvision's and timm's loaders do.
    return img.convert("RGB") if img.mode != "RGB" else img


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 [3, size, size]: shorter side resized to ``size`` (bicubic), centre-cropped."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        # JPEG can decode straight at a reduced scale no smaller than asked: big photos load fast.
        img.draft(img.mode, (size, size))
        img.load()
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        # PIL's resize widens its filter when shrinking, i.e. it antialiases.
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _load_tree(folder: Path, classes: list[str], size: int, strict: bool, where: str) -> ImageArrays:
    """Every image under folder/<class>/ (classes in the given order) decoded into one tensor."""
    files: list[Path] = []
    labels: list[int] = []
    ignored: list[Path] = []
    for i, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue  # a class the training split has and this split lacks is fine
        found, other = _image_files(class_dir)
        ignored += other
        if not found:
            raise DataError(
                f"class folder '{class_dir}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): add images or remove the folder"
            )
        files += found
        labels += [i] * len(found)
    if ignored:
        named = ", ".join(str(p.relative_to(folder)) for p in ignored[:_MAX_NAMED])
        more = f" and {len(ignored) - _MAX_NAMED} more" if len(ignored) > _MAX_NAMED else ""
        log.info("ignored %d files that are not images in %s '%s': %s%s", len(ignored), where, folder, named, more)

    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    ok = np.ones(len(files), dtype=bool)
    bad: list[tuple[Path, str]] = []

    def work(i: int) -> None:
        try:
            images[i] = _decode(files[i], size)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            ok[i] = False
            bad.append((files[i], f"{type(e).__name__}: {e}"))

    # PIL releases the GIL while decoding and resizing, so threads scale; each writes its own row.
    workers = max(1, min(8, os.cpu_count() or 1))
    if len(files) > 16 and workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(len(files))))
    else:
        for i in range(len(files)):
            work(i)

    if bad:
        bad.sort()
        named = ", ".join(f"{p.relative_to(folder)} ({why})" for p, why in bad[:_MAX_NAMED])
        more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
        if strict:
            raise DataError(
                f"{len(bad)} of {len(files)} images in {where} '{folder}' cannot be read: {named}{more}.\n"
                "fix: remove or re-save them, or set data.source_args.strict=false to skip them"
            )
        log.warning("skipped %d of %d unreadable images in %s '%s': %s%s", len(bad), len(files), where, folder, named, more)

    labels_t = torch.as_tensor(labels, dtype=torch.int64)[torch.from_numpy(ok)]
    present = set(labels_t.tolist())
    for i, name in enumerate(classes):
        if (folder / name).is_dir() and i not in present:
            raise DataError(f"class folder '{folder / name}' has no readable images (all were skipped): fix or remove them")
    return ImageArrays(torch.from_numpy(images[ok]).contiguous(), labels_t, list(classes))


def load_imagefolder(
    root: str,
    image_size: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
) -> Splits:
    """``root/<class>/<image>``, or ``root/train/<class>/...`` with optional ``val/`` and ``test/``.

    Missing splits are carved from the training images, stratified and seeded: test first
    (``test_fraction``), then val (``val_fraction``; 0 means none).
    """
    if not root or str(root) == "???":
        raise DataError(f"{ROOT_KEY} is unset: pass {ROOT_KEY}=<a folder of <class>/<image> sub-folders>")
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise DataError(f"{ROOT_KEY} '{root}' {what}: pass {ROOT_KEY}=<a folder of <class>/<image> sub-folders>")
    if not image_size or int(image_size) < 1:
        raise DataError(f"image_size={image_size!r}: give the size images are stored at (e.g. data.image_size=224)")
    if not (0.0 < test_fraction < 1.0):
        raise DataError(f"data.source_args.test_fraction={test_fraction} is outside (0, 1): use e.g. 0.2")
    if not (0.0 <= val_fraction < 1.0):
        raise DataError(f"data.source_args.val_fraction={val_fraction} is outside [0, 1): use e.g. 0.1, or 0 for no validation split")
    size = int(image_size)

    subdirs = {p.name for p in base.iterdir() if p.is_dir() and _visible(p)}
    split_dirs = subdirs & set(_SPLIT_DIRS)
    if split_dirs and "train" in split_dirs and subdirs != split_dirs:
        raise DataError(
            f"'{base}' mixes split folders ({', '.join(sorted(split_dirs))}) with others ({', '.join(sorted(subdirs - split_dirs))}): "
            "use either root/<class>/<image> or root/train|val|test/<class>/<image>"
        )
    if split_dirs and "train" not in split_dirs and subdirs == split_dirs:
        raise DataError(f"'{base}' has {', '.join(sorted(split_dirs))}/ but no train/: add root/train/<class>/<image>")

    given: dict[str, ImageArrays] = {}
    if "train" in split_dirs:
        classes = [p.name for p in _class_dirs(base / "train", "train folder")]
        for split in ("val", "test"):
            if split in split_dirs:
                names = [p.name for p in _class_dirs(base / split, f"{split} folder")]
                unknown = sorted(set(names) - set(classes))
                if unknown:
                    raise DataError(
                        f"{split}/ has classes that train/ lacks: {', '.join(unknown)}; add them to {base / 'train'} or remove them from {base / split}"
                    )
        pool = _load_tree(base / "train", classes, size, strict, "train folder")
        for split in ("val", "test"):
            if split in split_dirs:
                given[split] = _load_tree(base / split, classes, size, strict, f"{split} folder")
    else:
        classes = [p.name for p in _class_dirs(base, ROOT_KEY)]
        pool = _load_tree(base, classes, size, strict, ROOT_KEY)

    if "test" in given:
        test = given["test"]
    else:
        rest, test_idx = stratified_split(pool.labels, seed=seed, val_fraction=test_fraction)
        test, pool = pool.subset(test_idx), pool.subset(rest)
    val = given.get("val")
    if val is None and val_fraction > 0:
        rest, val_idx = stratified_split(pool.labels, seed=seed, val_fraction=val_fraction)
        val, pool = pool.subset(val_idx), pool.subset(rest)
    log.info(
        "imagefolder %s: %d classes; train pool %d, val %s, test %d images at %dx%d",
        base, len(classes), len(pool), len(val) if val is not None else "none", len(test), size, size,
    )
    return Splits(train=pool, test=test, val=val)


@register("imagefolder")
def _imagefolder_source(context: SourceContext, root: str, **options) -> Splits:
    # Stored a little larger than the crop, so the eval centre crop sees what timm's does.
    return load_imagefolder(root, image_size=context.storage_size, seed=context.seed, **options)
