"""Fashion-MNIST: data.source_args.root, then Debian's dataset-fashion-mnist, then a torchvision download."""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from transferlab.data.arrays import ImageArrays, Splits
from transferlab.data.sources.registry import ROOT_KEY, SourceContext, register
from transferlab.errors import DataError

log = logging.getLogger(__name__)

# Debian's dataset-fashion-mnist package; a module attribute so tests can point it elsewhere.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

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


@register("fashion_mnist")
def load_fashion_mnist(root: str | None = None, download: bool = True, context: SourceContext | None = None) -> Splits:
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
