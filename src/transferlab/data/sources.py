"""Data sources: every split of a data set as one in-memory uint8 tensor.

A source returns a ``Splits``: the labelled training pool (validation and the training subset are
carved from it later, in data/subsample.py), the test set, and a validation set only when the
source ships one. Images keep their stored size and channels; turning them into the backbone's
input happens per batch (data/transforms.py).
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)

# The config key users set; named in every message that tells them to set it.
ROOT_KEY = "data.source_args.root"

# Debian's dataset-fashion-mnist package; a module attribute so tests can point it elsewhere.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)


class DataError(TransferlabError, ValueError):
    """Data that cannot be found or read; the message names the problem and the fix."""


@dataclass
class ImageArrays:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Wrong dtypes here surface much later as silent normalisation bugs; fail where they start.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "ImageArrays":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageArrays(self.images[idx].contiguous(), self.labels[idx], list(self.classes))


@dataclass
class Splits:
    train: ImageArrays
    test: ImageArrays
    val: ImageArrays | None = None


# --- Fashion-MNIST ---------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_FASHION_FIX = (
    f"fix: `apt-get install dataset-fashion-mnist`, or set {ROOT_KEY} to a folder holding the four IDX files "
    "(train-images-idx3-ubyte[.gz], ...), or allow download=true where there is internet"
)


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """An IDX file (the MNIST format), raw or gzipped, as a numpy array; DataError if malformed."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}; delete it and fetch it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); delete it and fetch it again")
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise DataError(f"{path} holds a {dims}-D array, expected {ndim}-D: check that the file names match their contents")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; delete it and fetch it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} has {len(raw) - header} data bytes, its header {shape} says {expected} (truncated or corrupt); delete it and fetch it again"
        )
    # copy(): frombuffer over bytes is read-only, and torch warns on (and must not write to) such arrays.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _idx_files_in(folder: Path) -> tuple[dict[str, Path] | None, list[str]]:
    """The four Fashion-MNIST files in ``folder`` (uncompressed preferred), or None and the missing names."""
    found, missing = {}, []
    for key, stem in _FASHION_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(stem)
    return (found if not missing else None), missing


def _fashion_from_files(files: dict[str, Path]) -> Splits:
    def split(images_key: str, labels_key: str) -> ImageArrays:
        images = read_idx(files[images_key], ndim=3)
        labels = read_idx(files[labels_key], ndim=1)
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise DataError(f"{files[images_key]} holds {images.dtype} {images.shape}, not uint8 [N, 28, 28] Fashion-MNIST images")
        if len(images) != len(labels):
            raise DataError(f"{files[images_key]} has {len(images)} images but {files[labels_key]} has {len(labels)} labels: fetch both again")
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{files[labels_key]} has label {int(labels.max())}, Fashion-MNIST has 10 classes: fetch it again")
        return ImageArrays(
            torch.from_numpy(images).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)),
            list(FASHION_MNIST_CLASSES),
        )

    return Splits(train=split("train_images", "train_labels"), test=split("test_images", "test_labels"))


def load_fashion_mnist(root: str | None, download: bool = True) -> Splits:
    """Fashion-MNIST from ``root`` (flat or torchvision's FashionMNIST/raw), Debian's package, or a download."""
    tried: list[str] = []
    folders: list[tuple[str, Path]] = []
    if root:
        r = Path(root).expanduser()
        folders += [(f"{ROOT_KEY}={str(r)!r}", r), (str(r / "FashionMNIST" / "raw"), r / "FashionMNIST" / "raw")]
    folders.append((str(DEBIAN_FASHION_MNIST), DEBIAN_FASHION_MNIST))

    for label, folder in folders:
        files, missing = _idx_files_in(folder)
        if files is not None:
            log.info("Fashion-MNIST from %s", folder)
            return _fashion_from_files(files)
        if not folder.is_dir():
            tried.append(f"{label} (no such folder)")
        else:
            tried.append(f"{label} (missing {', '.join(missing)})")
            if len(missing) < len(_FASHION_FILES):
                log.warning("Fashion-MNIST files in %s are incomplete (missing %s); looking elsewhere", folder, ", ".join(missing))

    if not download:
        tried.append("download (off: download=false)")
    elif not root:
        tried.append(f"download (skipped: {ROOT_KEY} is unset, so there is nowhere to put it)")
    else:
        try:
            import torchvision

            torchvision.datasets.FashionMNIST(str(Path(root).expanduser()), train=True, download=True)
        except Exception as e:  # offline shows up as URLError, RuntimeError, socket errors... all mean "no download"
            tried.append(f"download into {root} (failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        else:
            files, missing = _idx_files_in(Path(root).expanduser() / "FashionMNIST" / "raw")
            if files is not None:
                return _fashion_from_files(files)
            tried.append(f"download into {root} (finished, but missing {', '.join(missing)})")

    raise DataError(f"Fashion-MNIST not found; tried: {'; '.join(tried)}.\n{_FASHION_FIX}")


# --- CIFAR-10 --------------------------------------------------------------------------------


def load_cifar10(root: str | None, download: bool = True) -> Splits:
    """CIFAR-10 through torchvision (root/cifar-10-batches-py), downloaded there if allowed."""
    fix = (
        f"fix: set {ROOT_KEY} to a folder holding cifar-10-batches-py/ (from cifar-10-python.tar.gz), "
        "or allow download=true where there is internet"
    )
    if not root:
        raise DataError(f"CIFAR-10 needs a folder: {ROOT_KEY} is unset.\n{fix}")
    import torchvision

    root = str(Path(root).expanduser())
    splits = {}
    for name, train in (("train", True), ("test", False)):
        try:
            ds = torchvision.datasets.CIFAR10(root, train=train, download=download)
        except Exception as e:  # RuntimeError when absent, URLError/OSError when offline
            how = "download failed" if download else "not found and download=false"
            raise DataError(f"CIFAR-10 not in {root} ({how}: {type(e).__name__}: {e}).\n{fix}") from e
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        splits[name] = ImageArrays(images, torch.as_tensor(ds.targets, dtype=torch.int64), list(ds.classes))
    return Splits(train=splits["train"], test=splits["test"])


# --- Synthetic -------------------------------------------------------------------------------


def make_synthetic(
    num_classes: int = 4,
    train_per_class: int = 64,
    test_per_class: int = 32,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
) -> Splits:
    """Images a small model can learn in a few steps: per class a smooth coloured wave pattern;
    per image a random shift, contrast, brightness and pixel noise, so no two are alike."""
    if num_classes < 2 or train_per_class < 1 or test_per_class < 1 or image_size < 4 or channels not in (1, 3):
        raise DataError(
            f"synthetic data needs num_classes >= 2, train/test_per_class >= 1, image_size >= 4, channels 1 or 3; "
            f"got {num_classes}, {train_per_class}/{test_per_class}, {image_size}, {channels}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    s = image_size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")

    # Templates in [0, 255]: a base colour plus two plane waves of random direction and frequency.
    base = 70 + 115 * torch.rand(num_classes, channels, 1, 1, generator=gen)
    templates = base.expand(num_classes, channels, s, s).clone()
    for _ in range(2):
        angle = 2 * torch.pi * torch.rand(num_classes, 1, 1, 1, generator=gen)
        freq = 1 + 3 * torch.rand(num_classes, 1, 1, 1, generator=gen)
        phase = 2 * torch.pi * torch.rand(num_classes, channels, 1, 1, generator=gen)
        amp = 25 + 20 * torch.rand(num_classes, channels, 1, 1, generator=gen)
        wave = torch.cos(2 * torch.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
        templates = templates + amp * wave

    def draw(per_class: int) -> ImageArrays:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        n = len(labels)
        x = templates[labels]
        # Shifts differ per image, so pixels never line up exactly between images of a class.
        shifts = torch.randint(-2, 3, (n, 2), generator=gen)
        x = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(1, 2)) for img, (dy, dx) in zip(x, shifts)])
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
        brightness = 30 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
        x = (x - mean) * contrast + mean + brightness + 30 * torch.randn(x.shape, generator=gen)
        images = x.round().clamp(0, 255).to(torch.uint8).contiguous()
        return ImageArrays(images, labels.to(torch.int64), [f"class_{i}" for i in range(num_classes)])

    train = draw(train_per_class)
    test = draw(test_per_class)
    return Splits(train=train, test=test)


# --- ImageFolder -----------------------------------------------------------------------------

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
    from transferlab.data.subsample import stratified_split  # subsample imports DataError from here

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
