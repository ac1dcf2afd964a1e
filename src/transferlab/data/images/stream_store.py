"""Images kept in LitData's optimized chunks instead of memory: written once per source, read by index.

`optimize_files` decodes a list of image files with the in-memory path's own decoder
(data/images/decode.py) into chunks through `litdata.optimize`, one row per file, a file that fails
included as a marked row so that it is counted and named like one that fails in memory. The
chunks are keyed like the feature cache: by every file's path, size, modification time and label,
the stored side and channels and the pixel limit, so an edited folder is converted again and an
unchanged one never is; parallel jobs wait on one build.

A split is then a `StreamedImages`: labels in memory, images as rows of the chunks. Batches are
drawn by the same sampler as in memory (data/loaders.py, a pure function of seed and epoch, DDP
shards included) and read row by row through `litdata.StreamingDataset` in the DataLoader's
workers, so a streamed run sees the very batches an in-memory run sees, and resumes the same way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from transferlab.data.caches.cache_files import CacheFileError, JsonKey, load_blob, read_or_build, save_blob
from transferlab.data.images.decode import TooLarge, decode_one
from transferlab.data.images.storage import Storage, human_bytes

log = logging.getLogger(__name__)

FORMAT = 1


def _is_remote(path: str) -> bool:
    return "://" in str(path)


# --- the key ---------------------------------------------------------------------------------


def listing_digest(files: list[Path], labels: list[int]) -> str:
    """A hash of each file's path, size, modification time and label, in order."""
    h = hashlib.blake2b(digest_size=20)
    for path, label in zip(files, labels):
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class StreamKey(JsonKey):
    listing: str  # listing_digest of the files
    count: int
    side: int
    channels: int
    max_pixels: int | None
    litdata: str


def make_key(files: list[Path], labels: list[int], side: int, channels: int, max_pixels: int | None) -> StreamKey:
    import litdata

    return StreamKey(listing_digest(files, labels), len(files), int(side), int(channels), max_pixels, litdata.__version__)


# --- reading ---------------------------------------------------------------------------------


class ChunkReader:
    """Rows of an optimized dataset by position, opened lazily in each process that reads.

    A DataLoader worker gets its own `StreamingDataset` (the parent's holds reader threads that a
    fork does not carry over), so the reader pickles as its paths alone.
    """

    def __init__(self, input_dir: str, cache_dir: str | None = None, key: str = ""):
        self.input_dir, self.cache_dir, self.key = str(input_dir), cache_dir, key
        self._dataset = None
        self._pid = None

    def __getstate__(self) -> dict:
        return {"input_dir": self.input_dir, "cache_dir": self.cache_dir, "key": self.key}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def dataset(self):
        if self._dataset is None or self._pid != os.getpid():
            from litdata import StreamingDataset

            # Rows are read by index in the sampler's order, not in chunk order: decode each row alone
            # (litdata's default decodes a window of rows around each one, for sequential reading).
            self._dataset = StreamingDataset(self.input_dir, cache_dir=self.cache_dir, batch_decode=0)
            self._pid = os.getpid()
        return self._dataset

    def __len__(self) -> int:
        return len(self.dataset())

    def row(self, position: int) -> dict:
        return self.dataset()[int(position)]

    def images(self, positions: list[int]) -> np.ndarray:
        return np.stack([self.row(p)["image"] for p in positions])


class StreamedView:
    """A streamed split's images, indexed like the uint8 [N, C, H, W] tensor they stand for."""

    dtype = torch.uint8

    def __init__(self, reader: ChunkReader, positions: torch.Tensor, shape: tuple[int, int, int]):
        self.reader, self.positions, self.item_shape = reader, positions, tuple(shape)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.positions), *self.item_shape)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index]][0]
        rows = self.positions[index]
        if not len(rows):
            return torch.empty((0, *self.item_shape), dtype=torch.uint8)
        return torch.from_numpy(self.reader.images(rows.tolist()))

    def digest(self) -> str:
        """The identity of these images: the chunks' key and the rows, in order."""
        h = hashlib.blake2b(digest_size=20)
        h.update(self.reader.key.encode() + b"\0")
        h.update(self.positions.numpy().tobytes())
        return h.hexdigest()


@dataclass
class StreamedImages:
    """A split whose labels are in memory and whose images are rows of optimized chunks; it is used
    wherever an ImageArrays is (same fields, `subset`, `inputs`)."""

    reader: ChunkReader
    positions: torch.Tensor  # int64 [N]: each image's row in the chunks
    labels: torch.Tensor  # int64 [N]
    classes: list[str] = field(default_factory=list)
    item_shape: tuple[int, int, int] = (3, 1, 1)  # (C, H, W) of every image
    field: ClassVar[str] = "images"

    def __post_init__(self) -> None:
        if self.positions.dtype != torch.int64 or self.positions.shape != self.labels.shape:
            raise ValueError(f"positions must be int64 like labels {tuple(self.labels.shape)}, got {self.positions.dtype} {tuple(self.positions.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> StreamedView:
        return StreamedView(self.reader, self.positions, self.item_shape)

    @property
    def inputs(self) -> StreamedView:
        return self.images

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: the labels and row numbers only."""
        return self.labels.nbytes + self.positions.nbytes

    @property
    def streamed_bytes(self) -> int:
        """Bytes of image data read from the chunks per epoch."""
        return len(self) * int(np.prod(self.item_shape))

    def subset(self, idx: torch.Tensor) -> "StreamedImages":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return StreamedImages(self.reader, self.positions[idx], self.labels[idx], list(self.classes), self.item_shape)

    take = subset  # only row numbers are copied


# --- writing ---------------------------------------------------------------------------------


def _convert(item: tuple[int, str], side: int, channels: int, max_pixels: int | None):
    """One file as one row; a file that fails is a marked row (so the build can name it)."""
    index, path = item
    image, digest, failure, why = np.zeros((channels, 1, 1), np.uint8), b"", "", ""
    try:
        image, digest = decode_one(Path(path), side, max_pixels, channels)
    except TooLarge as e:
        failure, why = "too_large", str(e)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        failure, why = "unreadable", f"{type(e).__name__}: {e}"
    yield {"index": index, "image": image, "digest": digest, "failure": failure or "", "why": why}


@dataclass
class Optimized:
    """What the chunks hold for a list of files, file by file in the order given."""

    reader: ChunkReader
    position: np.ndarray  # int64 [N]: the file's row, -1 where it failed
    digests: list[bytes | None]
    failed: list[tuple[Path, str]]  # (file, why) of the files that failed to decode, by file


@contextlib.contextmanager
def _contained(scratch: Path):
    """litdata.optimize, kept from changing the run around it.

    It stages under $TMPDIR/chunks and $TMPDIR/data unless told (kept beside the cache here), leaves
    its own variables in the environment, and seeds the process's random generators (python, numpy,
    torch) with a constant: a run that built its chunks would then train differently from one that
    found them built. The environment and the generators are put back as they were.
    """
    env = dict(os.environ)
    os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(scratch / "chunks")
    os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(scratch / "data")
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        os.environ.clear()
        os.environ.update(env)


def _folder_bytes(folder: str) -> int | None:
    if _is_remote(folder) or not os.path.isdir(folder):
        return None
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _write_chunks(files: list[Path], key: StreamKey, chunks: str, scratch: Path, storage: Storage) -> None:
    import litdata

    workers = storage.optimize_workers or max(1, min(len(files), os.cpu_count() or 1))
    log.info("optimizing %d images into LitData chunks at %s (%d workers)", len(files), chunks, workers)
    with _contained(scratch):
        litdata.optimize(
            fn=functools.partial(_convert, side=key.side, channels=key.channels, max_pixels=key.max_pixels),
            inputs=[(i, str(p)) for i, p in enumerate(files)], output_dir=chunks, chunk_bytes=storage.chunk_bytes,
            num_workers=workers, mode="overwrite", reorder_files=False,
            # litdata's default, spawn, is set for the whole process and would slow every DataLoader after it.
            start_method="fork",
        )


def _index_rows(reader: ChunkReader, files: list[Path]) -> dict:
    """One pass over the rows: where each file's row is, its digest, and what failed."""
    position = np.full(len(files), -1, np.int64)
    digests = np.zeros((len(files), 16), np.uint8)
    failed: list[tuple[int, str, str]] = []
    seen = np.zeros(len(files), bool)
    for row in range(len(reader)):
        item = reader.row(row)
        i = int(item["index"])
        if not 0 <= i < len(files) or seen[i]:
            raise CacheFileError(f"row {row} names file {i}, which is out of range or named twice")
        seen[i] = True
        if item["failure"]:
            failed.append((i, str(item["failure"]), str(item["why"])))
        else:
            position[i] = row
            digests[i] = np.frombuffer(bytes(item["digest"]), np.uint8)
    if not seen.all():
        raise CacheFileError(f"{int((~seen).sum())} files have no row")
    return {"position": torch.from_numpy(position), "digests": torch.from_numpy(digests), "failed": failed}


def optimize_files(files: list[Path], labels: list[int], side: int, channels: int, max_pixels: int | None,
                   storage: Storage) -> Optimized:
    """`files` decoded at `side` x `side` with `channels` into keyed chunks (built once), and what they hold."""
    key = make_key(files, labels, side, channels, max_pixels)
    name = key.digest()[:32]
    folder = storage.cache_root() / name
    chunks = f"{storage.stream_dir.rstrip('/')}/{name}" if storage.stream_dir else str(folder / "chunks")
    # A remote dataset is read through a local copy of the chunks it needs.
    reader = ChunkReader(chunks, cache_dir=str(folder / "download") if _is_remote(chunks) else None, key=key.to_json())

    def read(path: Path) -> dict:
        blob = load_blob(path, FORMAT, key, "the image files")
        if not _is_remote(chunks) and not (Path(chunks) / "index.json").is_file():
            raise CacheFileError(f"its chunks at {chunks} are missing")
        return blob

    def build() -> dict:
        _write_chunks(files, key, chunks, folder / "scratch", storage)
        return _index_rows(ChunkReader(chunks, reader.cache_dir, reader.key), files)

    cached = read_or_build(folder / "meta.pt", read, build, lambda p, v: save_blob(p, FORMAT, key, v), log, "stream index")
    meta = cached.value
    disk = _folder_bytes(chunks)
    log.info("stream %s: %d images at %dx%d, %d channel(s)%s, %s", chunks, len(files), side, side, channels,
             f", {human_bytes(disk)} on disk" if disk is not None else "", "reused" if cached.hit else "built")
    digests = [bytes(d.tolist()) if p >= 0 else None for d, p in zip(meta["digests"], meta["position"].tolist())]
    failed = sorted((files[i], why) for i, _, why in meta["failed"])
    return Optimized(reader, meta["position"].numpy(), digests, failed)

