"""Image files decoded into equal squares of 8-bit RGB or grey, each with a digest of its bytes.

Every PIL mode ends as 8-bit RGB, or 8-bit grey when asked (16-bit grey scaled, not clipped).
Images over a pixel limit are refused from their header, before any pixel is decoded, in place of
PIL's own process-wide check. The digest comes from the same read as the pixels, so telling copies
apart costs no second read. `probe_files` reads only headers: the sizes and modes a folder's
stored size and channels are chosen from (data/sources/imagefolder.py) before anything is decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)


def has_image_extension(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


# PIL warns over MAX_IMAGE_PIXELS and refuses over twice that; the refusal is the limit users meet.
PIL_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None


class TooLarge(Exception):
    def __init__(self, width: int, height: int):
        super().__init__(f"{width}x{height} = {width * height} pixels")


@contextmanager
def _pil_pixel_check_lifted():
    # PIL's bomb check is one process-wide setting; max_pixels takes its place while we decode.
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and max(1, width) * max(1, height) > max_pixels:
        raise TooLarge(width, height)


# Modes with one channel of grey (with or without alpha): such an image loses nothing stored as grey.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def _to_channels(img, channels: int = 3):
    """`img` as 8-bit RGB (channels=3) or 8-bit grey (channels=1)."""
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
    want = "L" if channels == 1 else "RGB"
    return img.convert(want) if img.mode != want else img


def decode_square(data: bytes, size: int, max_pixels: int | None, channels: int = 3) -> np.ndarray:
    """One image file's bytes as uint8 [channels, size, size]: shorter side resized to ``size``
    (bicubic), centre-cropped."""
    with Image.open(io.BytesIO(data)) as img:
        _check_pixels(img.size, max_pixels)  # from the header, before any pixel is decoded
        # JPEG can decode straight at a reduced scale no smaller than asked: big photos load fast.
        img.draft(img.mode, (size, size))
        img.load()
        img = ImageOps.exif_transpose(img)
        img = _to_channels(img, channels)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        # PIL's resize widens its filter when shrinking, i.e. it antialiases.
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _each_file(files: list[Path], out, work) -> None:
    """`work(i)` for every file; one whose work raises is marked in `out` (its `ok`, `too_large`
    and `unreadable`), never raised, so the caller can name every bad file at once.

    In threads: PIL and hashlib release the GIL while decoding, resizing and hashing, so they
    scale; each call writes its own row. PIL's pixel check is lifted (max_pixels stands for it)."""

    def guarded(i: int) -> None:
        try:
            work(i)
        except TooLarge as e:
            out.ok[i] = False
            out.too_large.append((files[i], str(e)))
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
            out.ok[i] = False
            out.unreadable.append((files[i], f"{type(e).__name__}: {e}"))

    workers = max(1, min(8, os.cpu_count() or 1))
    with _pil_pixel_check_lifted():
        if len(files) > 16 and workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(guarded, range(len(files))))
        else:
            for i in range(len(files)):
                guarded(i)
    out.unreadable.sort()
    out.too_large.sort()


@dataclass
class Probed:
    """What the headers of a list of files say, by file."""

    short_side: np.ndarray  # int64 [N]; 0 where the file failed
    grey: np.ndarray  # bool [N]: one channel of grey (GREY_MODES)
    ok: np.ndarray  # bool [N]
    unreadable: list[tuple[Path, str]]  # (file, the decoder's error)
    too_large: list[tuple[Path, str]]  # (file, its size in pixels)


def probe_files(files: list[Path], max_pixels: int | None) -> Probed:
    """Each file's size and mode from its header alone (no pixels decoded). ``max_pixels`` None: no limit."""
    out = Probed(np.zeros(len(files), np.int64), np.zeros(len(files), bool), np.ones(len(files), bool), [], [])

    def work(i: int) -> None:
        with Image.open(files[i]) as img:
            _check_pixels(img.size, max_pixels)
            out.short_side[i] = min(img.size)
            out.grey[i] = img.mode in GREY_MODES

    _each_file(files, out, work)
    return out


@dataclass
class Decoded:
    images: np.ndarray  # uint8 [N, C, size, size]; rows of failed files are garbage
    digests: list[bytes | None]  # of each file's bytes, hashed as they are read for decoding
    ok: np.ndarray  # bool [N]
    unreadable: list[tuple[Path, str]]  # (file, the decoder's error), by file
    too_large: list[tuple[Path, str]]  # (file, its size in pixels), by file


def decode_one(path: Path, size: int, max_pixels: int | None, channels: int = 3) -> tuple[np.ndarray, bytes]:
    """One file as uint8 [channels, size, size] and the digest of its bytes; raises what PIL raises,
    or TooLarge."""
    data = Path(path).read_bytes()
    return decode_square(data, size, max_pixels, channels), _digest(data)


def decode_files(files: list[Path], size: int, max_pixels: int | None, channels: int = 3) -> Decoded:
    """Each file as uint8 [channels, size, size]. ``max_pixels`` None: no limit."""
    out = Decoded(np.empty((len(files), channels, size, size), np.uint8), [None] * len(files),
                  np.ones(len(files), dtype=bool), [], [])

    def work(i: int) -> None:
        out.images[i], out.digests[i] = decode_one(files[i], size, max_pixels, channels)

    _each_file(files, out, work)
    return out
