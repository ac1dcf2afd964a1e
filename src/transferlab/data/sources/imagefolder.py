"""Any ``root/<class>/<image>`` tree, or ``root/train|val|test/<class>/<image>``.

What lies under the root is the data set, each image in one place: links are followed only to
folders and files inside the root that are not above the link, a file reached by two paths counts
once, an exact copy inside one class is dropped, and an image (by its bytes) in two classes or two
splits is an error.

Images are stored at their own size up to a cap (`data.store_size`; by default the backbone's eval
resize), never enlarged past the largest of them: every split is one array, so the stored side is
min(cap, the largest image's shorter side), and a folder of grey images is stored as one channel.
8x8 digits stay 8x8; photos are stored at the cap. The per-batch transform resizes on the device.

This module is the layout: class and split folders, the checks that each image is in one place,
and carving the missing splits. The walk under the root is data/walk.py; decoding, data/images/decode.py;
keeping the images in LitData chunks instead of memory (data.storage), data/images/stream_store.py.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.data.arrays import ImageArrays, Splits
from transferlab.data.images.decode import IMAGE_EXTENSIONS, PIL_PIXEL_LIMIT, Probed, decode_files, has_image_extension, probe_files
from transferlab.data.sources.registry import ROOT_KEY, SourceContext, register
from transferlab.data.images.storage import Storage
from transferlab.data.images.stream_store import StreamedImages, optimize_files
from transferlab.data.subsample import stratified_split
from transferlab.data.walk import SKIP_TEXT, Folder, Skipped, Walked, has_visible_subfolders, subfolders, walk_files
from transferlab.errors import DataError

log = logging.getLogger(__name__)

PIXELS_KEY = "data.source_args.max_image_pixels"

_SPLIT_DIRS = ("train", "val", "test")
_MAX_NAMED = 5  # how many bad files a message names before it just counts


def _named(items: list[str]) -> str:
    """The first few of ``items`` joined, then how many more."""
    more = f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
    return ", ".join(items[:_MAX_NAMED]) + more


def _named_with_reasons(failed: list[tuple[Path, str]], folder: Path) -> str:
    return _named([f"{p.relative_to(folder)} ({why})" for p, why in failed])


def _shown(path: Path, folder: Path) -> str:
    rel = str(path.relative_to(folder)) if path != folder else str(path)
    return f"{rel} -> {os.readlink(path)}" if path.is_symlink() else rel


def _log_skipped(skipped: Skipped, folder: Path, where: str) -> None:
    for kind, paths in skipped.items():
        if paths:
            one, many, fix = SKIP_TEXT[kind]
            what = one if len(paths) == 1 else many
            shown = _named([_shown(p, folder) for p in paths])
            log.warning("skipped %d %s in %s '%s': %s; %s", len(paths), what, where, folder, shown, fix)


# --- class folders ---------------------------------------------------------------------------


def _class_folders(dirs: dict[str, Folder], skipped: Skipped, folder: Path, where: str) -> dict[str, Folder]:
    _log_skipped(skipped, folder, where)
    if dirs:
        return dirs
    loose = [p for p in folder.iterdir() if p.is_file() and has_image_extension(p)]
    hint = f" (it has {len(loose)} images directly inside)" if loose else ""
    n_links = sum(len(v) for v in skipped.values())
    if n_links:
        hint += f" ({n_links} folder links in it were skipped, see the warning above)"
    raise DataError(f"{where} '{folder}' has no class folders{hint}: put images in {folder}/<class>/<image>")


def _require_two_classes(classes: dict[str, Folder], folder: Path, where: str) -> None:
    # With one class the classifier has nothing to tell apart, and the metrics fail far from here.
    if len(classes) >= 2:
        return
    ((name, only),) = classes.items()
    fix = "add another class folder"
    if has_visible_subfolders(only.path):
        fix += f", or pass {ROOT_KEY}={only.path} if its sub-folders are the classes"
    raise DataError(
        f"{where} '{folder}' has 1 class folder ({name}) and a classifier needs at least 2 classes: "
        f"{fix} ({folder}/<class>/<image>)"
    )


# --- what failed to decode -------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoding:
    cap: int  # the stored square's side is at most this (data.store_size)
    strict: bool  # a bad image is an error, not skipped
    max_pixels: int | None  # larger images are refused before they are decoded; None: no limit

    def limit_text(self) -> str:
        if self.max_pixels == PIL_PIXEL_LIMIT:
            return f"PIL's decompression-bomb limit of {self.max_pixels} pixels"
        return f"{PIXELS_KEY}={self.max_pixels}"


def _report_unreadable(bad: list[tuple[Path, str]], total: int, folder: Path, where: str, strict: bool) -> None:
    if not bad:
        return
    named = _named_with_reasons(bad, folder)
    if strict:
        raise DataError(
            f"{len(bad)} of {total} images in {where} '{folder}' cannot be read ({named}): "
            "remove or re-save them, or set data.source_args.strict=false to skip them"
        )
    log.warning("skipped %d of %d unreadable images in %s '%s': %s", len(bad), total, where, folder, named)


def _report_too_large(big: list[tuple[Path, str]], total: int, folder: Path, where: str, opts: _Decoding) -> None:
    if not big:
        return
    named = _named_with_reasons(big, folder)
    fix = f"set {PIXELS_KEY}=<more pixels>, or null for no limit, to load them"
    if opts.strict:
        raise DataError(
            f"{len(big)} of {total} images in {where} '{folder}' are over {opts.limit_text()} ({named}): {fix}, or remove them"
        )
    log.warning("skipped %d of %d images in %s '%s' over %s: %s; %s", len(big), total, where, folder, opts.limit_text(), named, fix)


# --- one split's folder ----------------------------------------------------------------------


@dataclass
class _Tree:
    """One split's images, with where each came from and a digest of its bytes."""

    split: str
    arrays: ImageArrays | StreamedImages
    paths: list[Path]
    digests: list[bytes]

    def subset(self, keep: list[int]) -> "_Tree":
        return _Tree(self.split, self.arrays.subset(torch.as_tensor(keep, dtype=torch.long)),
                     [self.paths[i] for i in keep], [self.digests[i] for i in keep])


@dataclass
class _Listing:
    """What walking one split's class folders found."""

    images: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # visible files that are not images
    skipped: Skipped = field(default_factory=lambda: defaultdict(list))
    repeats: int = 0  # files and folders reached by a second path, counted once

    def add(self, walked: Walked, label: int) -> int:
        """One class folder's walk, its images under ``label``; how many images it had."""
        before = len(self.images)
        for path in walked.files:
            if has_image_extension(path):
                self.images.append(path)
                self.labels.append(label)
            else:
                self.others.append(path)
        for kind, paths in walked.skipped.items():
            self.skipped[kind] += paths
        self.repeats += walked.repeats
        return len(self.images) - before


def _find_images(folder: Folder, classes: list[str], class_dirs: dict[str, Folder], root: str, where: str) -> _Listing:
    """Every image file under folder/<class>/, in class order; an empty class folder is an error."""
    found = _Listing()
    empty = []
    for label, name in enumerate(classes):
        if name not in class_dirs:
            continue  # a class the training split has and this split lacks is fine
        class_dir = class_dirs[name]
        # One walk per class: a file another class reaches too must count in both, to be found in both.
        walked = walk_files(class_dir, root)
        if found.add(walked, label) == 0:
            empty.append((class_dir.path, sum(map(len, walked.skipped.values()))))
    _log_listing(found, folder.path, where)
    if empty:
        path, n_skipped = empty[0]
        hint = f"; {n_skipped} entries in it were skipped, see the warning above" if n_skipped else ""
        raise DataError(
            f"class folder '{path}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}{hint}): add images or remove the folder"
        )
    return found


def _log_listing(found: _Listing, folder: Path, where: str) -> None:
    if found.others:
        named = _named([str(p.relative_to(folder)) for p in found.others])
        log.info("ignored %d files that are not images in %s '%s': %s", len(found.others), where, folder, named)
    if found.repeats:
        log.info("counted once %d files or folders reached by two paths in %s '%s'", found.repeats, where, folder)
    _log_skipped(found.skipped, folder, where)


@dataclass(frozen=True)
class _Format:
    """How every image of the source is stored."""

    side: int
    channels: int
    enlarged: int  # images smaller than `side`, which a one-array split must enlarge


def _stored_format(probes: list[Probed], cap: int) -> _Format:
    sides = np.concatenate([p.short_side[p.ok] for p in probes])
    grey = np.concatenate([p.grey[p.ok] for p in probes])
    if not len(sides):
        return _Format(cap, 3, 0)
    side = int(min(cap, sides.max()))
    return _Format(side, 1 if grey.all() else 3, int((sides < side).sum()))


@dataclass
class _Found:
    """One split's image files and their headers, before decoding."""

    folder: Folder
    where: str
    listing: _Listing
    probed: Probed

    def readable(self) -> list[int]:
        return np.flatnonzero(self.probed.ok).tolist()


def _find_split(folder: Folder, classes: list[str], class_dirs: dict[str, Folder], root: str, opts: _Decoding,
                where: str) -> _Found:
    listing = _find_images(folder, classes, class_dirs, root, where)
    probed = probe_files(listing.images, opts.max_pixels)
    _report_too_large(probed.too_large, len(listing.images), folder.path, where, opts)
    return _Found(folder, where, listing, probed)


def _tree(found: _Found, split: str, classes: list[str], class_dirs: dict[str, Folder], arrays_for, ok: np.ndarray,
          digests: list, unreadable: list[tuple[Path, str]], opts: _Decoding) -> _Tree:
    """One split's decoded images: `arrays_for(labels)` holds the files that `ok` marks, in order."""
    total = len(found.listing.images)
    _report_unreadable(sorted(found.probed.unreadable + unreadable), total, found.folder.path, found.where, opts.strict)
    keep = np.flatnonzero(ok)
    labels = torch.as_tensor(found.listing.labels, dtype=torch.int64)[torch.from_numpy(ok)]
    present = set(labels.tolist())
    for i, name in enumerate(classes):
        if name in class_dirs and i not in present:
            raise DataError(f"class folder '{class_dirs[name].path}' has no readable images (all were skipped): fix or remove them")
    return _Tree(split, arrays_for(labels), [found.listing.images[i] for i in keep], [digests[i] for i in keep])


def _decode_in_memory(found: _Found, split: str, classes, class_dirs, fmt: _Format, opts: _Decoding) -> _Tree:
    readable = found.readable()
    files = [found.listing.images[i] for i in readable]
    decoded = decode_files(files, fmt.side, opts.max_pixels, fmt.channels)
    ok = np.zeros(len(found.listing.images), bool)
    ok[readable] = decoded.ok
    digests: list = [None] * len(ok)
    for i, d in zip(readable, decoded.digests):
        digests[i] = d
    # Boolean indexing copies the whole split; a split that decoded whole is kept as decoded.
    images = torch.from_numpy(decoded.images if decoded.ok.all() else decoded.images[decoded.ok])
    return _tree(found, split, classes, class_dirs, lambda labels: ImageArrays(images, labels, list(classes)), ok, digests,
                 decoded.unreadable, opts)


def _stream(founds: dict[str, _Found], classes, class_dirs, fmt: _Format, opts: _Decoding, storage: Storage) -> dict[str, _Tree]:
    """Every split's readable files in one set of chunks; each split a StreamedImages of its rows."""
    files, labels, owner = [], [], []
    for split, found in founds.items():
        for i in found.readable():
            files.append(found.listing.images[i])
            labels.append(found.listing.labels[i])
            owner.append((split, i))
    if not files:  # nothing readable: the in-memory path names the empty class folders
        return {split: _decode_in_memory(f, split, classes, class_dirs[split], fmt, opts) for split, f in founds.items()}
    built = optimize_files(files, labels, fmt.side, fmt.channels, opts.max_pixels, storage)
    failed = dict(built.failed)
    trees = {}
    for split, found in founds.items():
        n = len(found.listing.images)
        ok, digests, rows = np.zeros(n, bool), [None] * n, np.full(n, -1, np.int64)
        for j, (s, i) in enumerate(owner):
            if s == split and built.position[j] >= 0:
                ok[i], digests[i], rows[i] = True, built.digests[j], built.position[j]
        unreadable = [(p, failed[p]) for p in found.listing.images if p in failed]
        positions = torch.from_numpy(rows[ok])

        def arrays_for(labels, positions=positions):
            return StreamedImages(built.reader, positions, labels, list(classes), (fmt.channels, fmt.side, fmt.side))

        trees[split] = _tree(found, split, classes, class_dirs[split], arrays_for, ok, digests, unreadable, opts)
    return trees


# --- each image in one place -----------------------------------------------------------------


def _drop_copies_within_class(tree: _Tree, folder: Path, where: str) -> _Tree:
    """Exact copies of an image in its own class, kept once: harmless to the label, but they would
    weigh the image twice and could land in two splits when splits are carved."""
    groups: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, (label, digest) in enumerate(zip(tree.arrays.labels.tolist(), tree.digests)):
        groups[(label, digest)].append(i)
    keep, copies = [], []
    for members in groups.values():
        # The shortest name is most likely the original ("x.jpg", not "x (1).jpg" or "x copy.jpg").
        kept = min(members, key=lambda i: (len(str(tree.paths[i])), str(tree.paths[i])))
        keep.append(kept)
        copies += [(tree.paths[i], tree.paths[kept]) for i in members if i != kept]
    if not copies:
        return tree
    copies.sort()
    named = _named([f"{c.relative_to(folder)} (same bytes as {k.relative_to(folder)})" for c, k in copies])
    log.warning("dropped %d exact copies of images in their own class in %s '%s', each image kept once: %s",
                len(copies), where, folder, named)
    return tree.subset(sorted(keep))


def _clashes(trees: list[_Tree]) -> list[tuple[_Tree, int, _Tree, int]]:
    """Pairs of the same bytes in two classes or two splits: (where first seen, index, where again, index)."""
    first: dict[bytes, tuple[_Tree, int]] = {}
    out = []
    for tree in trees:
        for j, digest in enumerate(tree.digests):
            seen = first.setdefault(digest, (tree, j))
            if seen[0] is not tree or seen[1] != j:
                out.append((*seen, tree, j))
    return out


def _clash_error(clashes: list[tuple[_Tree, int, _Tree, int]]) -> DataError:
    a, i, b, j = clashes[0]
    same_kind = [c for c in clashes if (c[0].split, c[2].split) == (a.split, b.split) and (a is b) == (c[0] is c[2])]
    more = f" and {len(same_kind) - 1} more (each is listed in the log)" if len(same_kind) > 1 else ""
    if a is b:
        ca, cb = a.arrays.classes[int(a.arrays.labels[i])], b.arrays.classes[int(b.arrays.labels[j])]
        return DataError(
            f"the same image is in two classes ({a.paths[i]} in '{ca}', {b.paths[j]} in '{cb}'){more}: "
            "delete it from the class it does not belong to"
        )
    return DataError(
        f"the same image is in {a.split} and {b.split} ({a.paths[i]}, {b.paths[j]}){more}: "
        "delete one of the copies, so that each image is in one split"
    )


def _check_each_image_in_one_place(trees: list[_Tree]) -> None:
    clashes = _clashes(trees)
    if not clashes:
        return
    if len(clashes) > 1:
        for a, i, b, j in clashes:
            log.warning("the same image is in two places: %s (%s) and %s (%s)", a.paths[i], a.split, b.paths[j], b.split)
    raise _clash_error(clashes)


# --- the source ------------------------------------------------------------------------------


def _pixel_limit(value) -> int | None:
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise DataError(f"{PIXELS_KEY}={value!r} is not a whole number of pixels >= 1: give e.g. 400000000, or null for no limit")
    return int(value)


def _split_folder_names(subdirs: set[str], base: Path) -> set[str]:
    """The split folders in the root (empty for root/<class>/<image>); mixed or train-less layouts are errors."""
    split_dirs = subdirs & set(_SPLIT_DIRS)
    if split_dirs and "train" in split_dirs and subdirs != split_dirs:
        raise DataError(
            f"'{base}' mixes split folders ({', '.join(sorted(split_dirs))}) with others ({', '.join(sorted(subdirs - split_dirs))}): "
            "use either root/<class>/<image> or root/train|val|test/<class>/<image>"
        )
    if split_dirs and "train" not in split_dirs and subdirs == split_dirs:
        raise DataError(f"'{base}' has {', '.join(sorted(split_dirs))}/ but no train/: add root/train/<class>/<image>")
    return split_dirs if "train" in split_dirs else set()


def _require_known_classes(class_dirs: dict[str, dict[str, Folder]], base: Path) -> None:
    for split in ("val", "test"):
        unknown = sorted(set(class_dirs.get(split, {})) - set(class_dirs["train"]))
        if unknown:
            raise DataError(
                f"{split}/ has classes that train/ lacks: {', '.join(unknown)}; add them to {base / 'train'} or remove them from {base / split}"
            )


def _layout(top: Folder, root: str) -> tuple[dict[str, Folder], dict[str, dict[str, Folder]]]:
    """Each split's folder (train always; val and test where the root has them) and its class folders."""
    top_dirs, top_skipped = subfolders(top, root)
    split_dirs = _split_folder_names(set(top_dirs), top.path)
    if not split_dirs:
        classes = _class_folders(top_dirs, top_skipped, top.path, ROOT_KEY)
        _require_two_classes(classes, top.path, ROOT_KEY)
        return {"train": top}, {"train": classes}
    _log_skipped(top_skipped, top.path, ROOT_KEY)
    folders = {s: top_dirs[s] for s in _SPLIT_DIRS if s in split_dirs}
    class_dirs = {s: _class_folders(*subfolders(f, root), f.path, f"{s} folder") for s, f in folders.items()}
    _require_known_classes(class_dirs, top.path)
    _require_two_classes(class_dirs["train"], folders["train"].path, "train folder")
    return folders, class_dirs


def _carve(trees: dict[str, _Tree], val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """The splits the root lacks carved from train, stratified and seeded: test first, then val."""
    pool = trees["train"].arrays
    if "test" in trees:
        test = trees["test"].arrays
    else:
        rest, test_idx = stratified_split(pool.labels, seed=seed, val_fraction=test_fraction)
        test, pool = pool.subset(test_idx), pool.take(rest)
    val = trees["val"].arrays if "val" in trees else None
    if val is None and val_fraction > 0:
        rest, val_idx = stratified_split(pool.labels, seed=seed, val_fraction=val_fraction)
        val, pool = pool.subset(val_idx), pool.take(rest)
    return Splits(train=pool, test=test, val=val)


def load_imagefolder(
    root: str,
    image_size: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    max_image_pixels: int | None = PIL_PIXEL_LIMIT,
    storage: Storage = Storage(),
) -> Splits:
    """``root/<class>/<image>``, or ``root/train/<class>/...`` with optional ``val/`` and ``test/``.

    Missing splits are carved from the training images, stratified and seeded: test first
    (``test_fraction``), then val (``val_fraction``; 0 means none). Images over ``max_image_pixels``
    are refused before they are decoded (None: no limit).
    """
    if not root or str(root) == "???":
        raise DataError(f"{ROOT_KEY} is unset: pass {ROOT_KEY}=<a folder of <class>/<image> sub-folders>")
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise DataError(f"{ROOT_KEY} '{root}' {what}: pass {ROOT_KEY}=<a folder of <class>/<image> sub-folders>")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"data.store_size={image_size!r} is not a whole number of pixels >= 1: give the largest side to store images at (e.g. 256), or null for the model's")
    if not (0.0 < test_fraction < 1.0):
        raise DataError(f"data.source_args.test_fraction={test_fraction} is outside (0, 1): use e.g. 0.2")
    if not (0.0 <= val_fraction < 1.0):
        raise DataError(f"data.source_args.val_fraction={val_fraction} is outside [0, 1): use e.g. 0.1, or 0 for no validation split")
    opts = _Decoding(cap=int(image_size), strict=strict, max_pixels=_pixel_limit(max_image_pixels))

    real_root = os.path.realpath(base)
    top = Folder(base, real_root)
    folders, class_dirs = _layout(top, real_root)
    classes = list(class_dirs["train"])
    founds = {
        split: _find_split(folder, classes, class_dirs[split], real_root, opts, ROOT_KEY if folder is top else f"{split} folder")
        for split, folder in folders.items()
    }
    fmt = _stored_format([f.probed for f in founds.values()], opts.cap)
    count = sum(len(f.readable()) for f in founds.values())
    if storage.streams(count * fmt.channels * fmt.side**2, f"imagefolder '{base}'"):
        trees = _stream(founds, classes, class_dirs, fmt, opts, storage)
    else:
        trees = {split: _decode_in_memory(f, split, classes, class_dirs[split], fmt, opts) for split, f in founds.items()}
    if fmt.enlarged:
        log.info("enlarged %d images smaller than %dx%d to it: a split is stored as one array of one size", fmt.enlarged, fmt.side, fmt.side)
    for split, found in founds.items():
        trees[split] = _drop_copies_within_class(trees[split], found.folder.path, found.where)
    # Before carving, so that a carved split shares no image with another either.
    _check_each_image_in_one_place(list(trees.values()))

    splits = _carve(trees, val_fraction, test_fraction, seed)
    log.info(
        "imagefolder %s: %d classes; train pool %d, val %s, test %d images stored at %dx%d, %d channel(s) (cap %d)",
        base, len(classes), len(splits.train), len(splits.val) if splits.val is not None else "none",
        len(splits.test), fmt.side, fmt.side, fmt.channels, opts.cap,
    )
    return splits


@register("imagefolder", streams=True)
def _imagefolder_source(context: SourceContext, root: str, **options) -> Splits:
    return load_imagefolder(root, image_size=context.storage_size, seed=context.seed, storage=context.storage, **options)
