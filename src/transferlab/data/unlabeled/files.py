"""`data.unlabeled=<path>`: an unlabelled pool from files beside the labelled source.

- Images: a folder, walked whole (sub-folders too, links as data/walk.py allows); every image is
  decoded at the labelled splits' stored side and channels, so both go through one preprocessing
  and one forward pass. Unreadable files are skipped and counted in a warning.
- Texts: a .txt file (one text per line), a folder of .txt files (one text per file), or a table
  (.csv, .tsv, .jsonl, .parquet) whose `data.unlabeled_column` holds the texts. Empty texts are
  skipped. They are tokenized by the run's tokenizer like the labelled texts.

Every label is UNLABELED; no class structure is read from the folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from transferlab.data.arrays import UNLABELED, ImageArrays
from transferlab.data.images.decode import PIL_PIXEL_LIMIT, decode_files, has_image_extension
from transferlab.data.text.tokens import token_arrays
from transferlab.data.walk import Folder, walk_files
from transferlab.errors import DataError

log = logging.getLogger(__name__)

KEY = "data.unlabeled"
COLUMN_KEY = "data.unlabeled_column"
_TABLES = (".csv", ".tsv", ".jsonl", ".parquet")


def _walked(path: Path) -> list[Path]:
    real = os.path.realpath(path)
    return sorted(walk_files(Folder(path, real), real).files)


def load_unlabeled_images(path: Path, like: ImageArrays) -> ImageArrays:
    """Every image under `path` at `like`'s stored side and channels, labels UNLABELED."""
    if not path.is_dir():
        raise DataError(f"{KEY}={path} is a file: for images pass a folder of them")
    files = [f for f in _walked(path) if has_image_extension(f)]
    if not files:
        raise DataError(f"{KEY}={path} holds no image files (.jpg, .png, ...): point it at the folder of unlabelled images")
    channels, side = int(like.images.shape[1]), int(like.images.shape[-1])
    decoded = decode_files(files, side, PIL_PIXEL_LIMIT, channels)
    failed = len(decoded.unreadable) + len(decoded.too_large)
    if not decoded.ok.any():
        raise DataError(f"{KEY}={path}: none of its {len(files)} image files could be read (e.g. {decoded.unreadable[:1] or decoded.too_large[:1]})")
    if failed:
        log.warning("%s=%s: skipped %d of %d image files that could not be read or were too large", KEY, path, failed, len(files))
    images = torch.from_numpy(decoded.images if decoded.ok.all() else decoded.images[decoded.ok])
    log.info("%s=%s: %d images, stored as %s like the labelled splits", KEY, path, len(images), tuple(images.shape[1:]))
    return ImageArrays(images, torch.full((len(images),), UNLABELED, dtype=torch.int64), list(like.classes))


def _texts(path: Path, column: str) -> list[str]:
    if path.is_dir():
        files = [f for f in _walked(path) if f.suffix.lower() == ".txt"]
        if not files:
            raise DataError(f"{KEY}={path} holds no .txt files: give a folder of .txt files (one text each), a .txt file "
                            "(one text per line) or a table")
        return [f.read_text(encoding="utf-8", errors="replace").strip() for f in files]
    if path.suffix.lower() in _TABLES:
        from transferlab.data.sources.text_table import read_table, table_format

        frame = read_table(path, table_format(path, "auto"), "utf-8")
        if column not in frame.columns:
            raise DataError(f"{path} has no column {column!r} ({COLUMN_KEY}); its columns are {', '.join(map(str, frame.columns))}: "
                            f"set {COLUMN_KEY}=<the column of texts>")
        return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in frame[column].tolist()]
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def load_unlabeled_texts(path: Path, like, tokenize, column: str = "text"):
    """The texts at `path`, tokenized like the labelled splits, labels UNLABELED."""
    texts = [t.strip() for t in _texts(path, column)]
    kept = [t for t in texts if t]
    if not kept:
        raise DataError(f"{KEY}={path} holds no non-empty texts")
    if len(kept) < len(texts):
        log.info("%s=%s: skipped %d empty texts", KEY, path, len(texts) - len(kept))
    return token_arrays(kept, [UNLABELED] * len(kept), list(like.classes), tokenize, KEY)
