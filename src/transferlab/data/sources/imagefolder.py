"""Any ``root/<class>/<image>`` tree, or ``root/train|val|test/<class>/<image>``.

What lies under the root is the data set, each image in one place: links are followed only to
folders and files inside the root that are not above the link, a file reached by two paths counts
once, an exact copy inside one class is dropped, and an image (by its bytes) in two classes or two
splits is an error.
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
from transferlab.data.decode import IMAGE_EXTENSIONS, PIL_PIXEL_LIMIT, decode_files
from transferlab.data.sources.registry import ROOT_KEY, SourceContext, register
from transferlab.data.subsample import stratified_split
from transferlab.errors import DataError

log = logging.getLogger(__name__)

PIXELS_KEY = "data.source_args.max_image_pixels"

_SPLIT_DIRS = ("train", "val", "test")
_MAX_NAMED = 5  # how many bad files a message names before it just counts
_NOT_DATA_DIRS = frozenset({"__MACOSX"})  # what macOS zips carry beside the data: AppleDouble ._ files

# Why a walk skips an entry: (one, many, what the user can do).
_LOOP, _OUTSIDE, _BROKEN, _SPECIAL, _UNLISTED = "loop", "outside", "broken", "special", "unlisted"
_SKIP_TEXT = {
    _LOOP: ("link that loops back to a folder above it", "links that loop back to a folder above them",
            "they lead to folders walked already; remove them to silence this"),
    _OUTSIDE: ("link that points outside the root", "links that point outside the root",
               "copy what they point to into the root (cp -rL) to use it"),
    _BROKEN: ("broken link", "broken links", "fix or remove them"),
    _SPECIAL: ("entry that is not a regular file", "entries that are not regular files", "remove them"),
    _UNLISTED: ("folder that cannot be listed", "folders that cannot be listed", "check their permissions"),
}


def _visible(name: str) -> bool:
    # Hidden entries (.DS_Store, AppleDouble ._x.jpg, .ipynb_checkpoints) are never data.
    return not name.startswith(".") and name not in _NOT_DATA_DIRS


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _named(items: list[str]) -> str:
    """The first few of ``items`` joined, then how many more."""
    more = f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
    return ", ".join(items[:_MAX_NAMED]) + more


# --- walking the tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
    path: Path  # as the user names it (under the root as given)
    real: str  # every link resolved


@dataclass
class _Listing:
    """What walking one split's class folders found."""

    images: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # visible files that are not images
    skipped: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    repeats: int = 0  # files and folders reached by a second path, counted once


def _inside(real: str, root: str) -> bool:
    return os.path.commonpath([real, root]) == root


def _is_above(target: str, here: str, descent: tuple[str, ...]) -> bool:
    """Whether a link in ``here`` to folder ``target`` leads back up: to ``here``, a folder that holds
    it, or one the walk came through (a cycle of links that no single folder contains)."""
    return target in descent or _inside(here, target)


def _kind(entry: os.DirEntry, here: str, root: str, descent: tuple[str, ...]) -> tuple[str, str]:
    """(``"dir"``, ``"file"`` or why it is skipped; its real path) for one entry of folder ``here``."""
    if not entry.is_symlink():
        real = os.path.join(here, entry.name)
        if entry.is_dir(follow_symlinks=False):
            return "dir", real
        return ("file" if entry.is_file(follow_symlinks=False) else _SPECIAL), real
    real = os.path.realpath(entry.path)
    if not os.path.exists(real):  # a missing target, or a cycle of links that never reaches one
        return _BROKEN, real
    if not _inside(real, root):
        return _OUTSIDE, real
    if os.path.isdir(real):
        return (_LOOP if _is_above(real, here, descent) else "dir"), real
    # A FIFO named like an image would block the loader forever, so only regular files are read.
    return ("file" if os.path.isfile(real) else _SPECIAL), real


def _sorted_entries(folder: Path) -> list[os.DirEntry] | None:
    """Visible entries by name; None when the folder cannot be listed."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if _visible(e.name)), key=lambda e: e.name)
    except OSError:
        return None


def _walk(folder: _Folder, root: str, label: int, found: _Listing, seen: set[str], descent: tuple[str, ...]) -> None:
    """Files of ``folder`` (sorted), then its sub-folders depth first, as os.walk orders them."""
    entries = _sorted_entries(folder.path)
    if entries is None:
        found.skipped[_UNLISTED].append(folder.path)
        return
    subfolders = []
    for entry in entries:
        kind, real = _kind(entry, folder.real, root, descent)
        path = folder.path / entry.name
        if kind not in ("dir", "file"):
            found.skipped[kind].append(path)
        elif real in seen:
            found.repeats += 1
        elif kind == "dir":
            seen.add(real)
            subfolders.append(_Folder(path, real))
        else:
            seen.add(real)
            if _is_image_name(entry.name):
                found.images.append(path)
                found.labels.append(label)
            else:
                found.others.append(path)
    for sub in subfolders:
        _walk(sub, root, label, found, seen, descent + (sub.real,))


def _subfolders(folder: _Folder, root: str) -> tuple[dict[str, _Folder], dict[str, list[Path]]]:
    """The visible folders in ``folder`` that may be walked, by name; and the links it skips, by why."""
    skipped: dict[str, list[Path]] = defaultdict(list)
    entries = _sorted_entries(folder.path)
    if entries is None:
        skipped[_UNLISTED].append(folder.path)
        return {}, skipped
    dirs = {}
    for entry in entries:
        kind, real = _kind(entry, folder.real, root, (folder.real,))
        if kind == "dir":
            dirs[entry.name] = _Folder(folder.path / entry.name, real)
        elif kind in (_LOOP, _BROKEN) or (kind == _OUTSIDE and os.path.isdir(real)):  # loose files: ignored
            skipped[kind].append(folder.path / entry.name)
    return dirs, skipped


def _shown(path: Path, folder: Path) -> str:
    rel = str(path.relative_to(folder)) if path != folder else str(path)
    return f"{rel} -> {os.readlink(path)}" if path.is_symlink() else rel


def _log_skipped(skipped: dict[str, list[Path]], folder: Path, where: str) -> None:
    for kind, paths in skipped.items():
        if paths:
            one, many, fix = _SKIP_TEXT[kind]
            what = one if len(paths) == 1 else many
            shown = _named([_shown(p, folder) for p in paths])
            log.warning("skipped %d %s in %s '%s': %s; %s", len(paths), what, where, folder, shown, fix)


def _class_folders(dirs: dict[str, _Folder], skipped: dict[str, list[Path]], folder: Path, where: str) -> dict[str, _Folder]:
    _log_skipped(skipped, folder, where)
    if dirs:
        return dirs
    loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    hint = f" (it has {len(loose)} images directly inside)" if loose else ""
    n_links = sum(len(v) for v in skipped.values())
    if n_links:
        hint += f" ({n_links} folder links in it were skipped, see the warning above)"
    raise DataError(f"{where} '{folder}' has no class folders{hint}: put images in {folder}/<class>/<image>")


def _has_visible_subfolders(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(_visible(e.name) and e.is_dir() for e in it)
    except OSError:
        return False


def _require_two_classes(classes: dict[str, _Folder], folder: Path, where: str) -> None:
    # With one class the classifier has nothing to tell apart, and the metrics fail far from here.
    if len(classes) >= 2:
        return
    ((name, only),) = classes.items()
    fix = "add another class folder"
    if _has_visible_subfolders(only.path):
        fix += f", or pass {ROOT_KEY}={only.path} if its sub-folders are the classes"
    raise DataError(
        f"{where} '{folder}' has 1 class folder ({name}) and a classifier needs at least 2 classes: "
        f"{fix} ({folder}/<class>/<image>)"
    )


# --- what failed to decode -------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoding:
    size: int  # side of the stored square
    strict: bool  # a bad image is an error, not skipped
    max_pixels: int | None  # larger images are refused before they are decoded; None: no limit

    def limit_text(self) -> str:
        if self.max_pixels == PIL_PIXEL_LIMIT:
            return f"PIL's decompression-bomb limit of {self.max_pixels} pixels"
        return f"{PIXELS_KEY}={self.max_pixels}"


def _report_unreadable(bad: list[tuple[Path, str]], total: int, folder: Path, where: str, strict: bool) -> None:
    if not bad:
        return
    named = _named([f"{p.relative_to(folder)} ({why})" for p, why in bad])
    if strict:
        raise DataError(
            f"{len(bad)} of {total} images in {where} '{folder}' cannot be read ({named}): "
            "remove or re-save them, or set data.source_args.strict=false to skip them"
        )
    log.warning("skipped %d of %d unreadable images in %s '%s': %s", len(bad), total, where, folder, named)


def _report_too_large(big: list[tuple[Path, str]], total: int, folder: Path, where: str, opts: _Decoding) -> None:
    if not big:
        return
    named = _named([f"{p.relative_to(folder)} ({why})" for p, why in big])
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
    arrays: ImageArrays
    paths: list[Path]
    digests: list[bytes]

    def subset(self, keep: list[int]) -> "_Tree":
        return _Tree(self.split, self.arrays.subset(torch.as_tensor(keep, dtype=torch.long)),
                     [self.paths[i] for i in keep], [self.digests[i] for i in keep])


def _find_images(folder: _Folder, classes: list[str], class_dirs: dict[str, _Folder], root: str, where: str) -> _Listing:
    """Every image file under folder/<class>/, in class order; an empty class folder is an error."""
    found = _Listing()
    empty = []
    for label, name in enumerate(classes):
        if name not in class_dirs:
            continue  # a class the training split has and this split lacks is fine
        before, skipped_before = len(found.images), sum(map(len, found.skipped.values()))
        class_dir = class_dirs[name]
        # Per class: a file another class reaches too must count in both, to be found in both.
        _walk(class_dir, root, label, found, {class_dir.real}, (class_dir.real,))
        if len(found.images) == before:
            empty.append((class_dir.path, sum(map(len, found.skipped.values())) - skipped_before))
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


def _load_tree(folder: _Folder, split: str, classes: list[str], class_dirs: dict[str, _Folder], root: str,
               opts: _Decoding, where: str) -> _Tree:
    """Every image under folder/<class>/ (classes in the given order) decoded into one tensor."""
    found = _find_images(folder, classes, class_dirs, root, where)
    decoded = decode_files(found.images, opts.size, opts.max_pixels)
    _report_unreadable(decoded.unreadable, len(found.images), folder.path, where, opts.strict)
    _report_too_large(decoded.too_large, len(found.images), folder.path, where, opts)

    keep = np.flatnonzero(decoded.ok)
    labels = torch.as_tensor(found.labels, dtype=torch.int64)[torch.from_numpy(decoded.ok)]
    present = set(labels.tolist())
    for i, name in enumerate(classes):
        if name in class_dirs and i not in present:
            raise DataError(f"class folder '{class_dirs[name].path}' has no readable images (all were skipped): fix or remove them")
    arrays = ImageArrays(torch.from_numpy(decoded.images[decoded.ok]).contiguous(), labels, list(classes))
    return _Tree(split, arrays, [found.images[i] for i in keep], [decoded.digests[i] for i in keep])


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


def _require_known_classes(class_dirs: dict[str, dict[str, _Folder]], base: Path) -> None:
    for split in ("val", "test"):
        unknown = sorted(set(class_dirs.get(split, {})) - set(class_dirs["train"]))
        if unknown:
            raise DataError(
                f"{split}/ has classes that train/ lacks: {', '.join(unknown)}; add them to {base / 'train'} or remove them from {base / split}"
            )


def _layout(top: _Folder, root: str) -> tuple[dict[str, _Folder], dict[str, dict[str, _Folder]]]:
    """Each split's folder (train always; val and test where the root has them) and its class folders."""
    top_dirs, top_skipped = _subfolders(top, root)
    split_dirs = _split_folder_names(set(top_dirs), top.path)
    if not split_dirs:
        classes = _class_folders(top_dirs, top_skipped, top.path, ROOT_KEY)
        _require_two_classes(classes, top.path, ROOT_KEY)
        return {"train": top}, {"train": classes}
    _log_skipped(top_skipped, top.path, ROOT_KEY)
    folders = {s: top_dirs[s] for s in _SPLIT_DIRS if s in split_dirs}
    class_dirs = {s: _class_folders(*_subfolders(f, root), f.path, f"{s} folder") for s, f in folders.items()}
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
        test, pool = pool.subset(test_idx), pool.subset(rest)
    val = trees["val"].arrays if "val" in trees else None
    if val is None and val_fraction > 0:
        rest, val_idx = stratified_split(pool.labels, seed=seed, val_fraction=val_fraction)
        val, pool = pool.subset(val_idx), pool.subset(rest)
    return Splits(train=pool, test=test, val=val)


def load_imagefolder(
    root: str,
    image_size: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    max_image_pixels: int | None = PIL_PIXEL_LIMIT,
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
    if not image_size or int(image_size) < 1:
        raise DataError(f"image_size={image_size!r}: give the size images are stored at (e.g. data.image_size=224)")
    if not (0.0 < test_fraction < 1.0):
        raise DataError(f"data.source_args.test_fraction={test_fraction} is outside (0, 1): use e.g. 0.2")
    if not (0.0 <= val_fraction < 1.0):
        raise DataError(f"data.source_args.val_fraction={val_fraction} is outside [0, 1): use e.g. 0.1, or 0 for no validation split")
    opts = _Decoding(size=int(image_size), strict=strict, max_pixels=_pixel_limit(max_image_pixels))

    real_root = os.path.realpath(base)
    top = _Folder(base, real_root)
    folders, class_dirs = _layout(top, real_root)
    classes = list(class_dirs["train"])
    trees = {}
    for split, folder in folders.items():
        where = ROOT_KEY if folder is top else f"{split} folder"
        tree = _load_tree(folder, split, classes, class_dirs[split], real_root, opts, where)
        trees[split] = _drop_copies_within_class(tree, folder.path, where)
    # Before carving, so that a carved split shares no image with another either.
    _check_each_image_in_one_place(list(trees.values()))

    splits = _carve(trees, val_fraction, test_fraction, seed)
    log.info(
        "imagefolder %s: %d classes; train pool %d, val %s, test %d images at %dx%d",
        base, len(classes), len(splits.train), len(splits.val) if splits.val is not None else "none",
        len(splits.test), opts.size, opts.size,
    )
    return splits


@register("imagefolder")
def _imagefolder_source(context: SourceContext, root: str, **options) -> Splits:
    # Stored a little larger than the crop, so the eval centre crop sees what timm's does.
    return load_imagefolder(root, image_size=context.storage_size, seed=context.seed, **options)
