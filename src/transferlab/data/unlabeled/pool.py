"""The unlabelled pool a run may learn from (`data.unlabeled`), with its labels hidden.

- `rest`: the part of the training pool that neither the training subset nor validation drew;
- `source`: the source's own `Splits.unlabeled` (a target domain's images);
- a path: a folder of images, or a text file / table of texts (data/unlabeled/files.py);
- `target`: the training images of another source, `data.target` (whose test split the run is
  scored on): its `Splits.unlabeled` if it has one, else its training pool; the default when
  data.target is set;
- null: none.

Either way every label is replaced by `UNLABELED`, so a loss or metric that reads one by mistake
fails instead of learning from labels the method is not meant to see. `data.unlabeled_max` keeps a
seeded uniform draw of the pool: uniform rather than stratified, since stratifying would read the
labels the pool is meant to hide.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from transferlab.data.arrays import UNLABELED
from transferlab.errors import DataError

CHOICES = ("rest", "source", "target")
# Apart from the training subset's own seed stream: capping the pool never moves the labelled split.
_CAP_SEED_OFFSET = 7919


def check_choice(unlabeled: str | None, unlabeled_max: int | None) -> None:
    if unlabeled is not None and unlabeled not in CHOICES and not Path(str(unlabeled)).expanduser().exists():
        raise DataError(f"data.unlabeled={unlabeled!r} is unknown: use rest (the training pool's unused images), source "
                        "(the source's own unlabelled pool), target (data.target's training images), a folder of images, "
                        "a text file or table of texts, or null")
    if unlabeled_max is not None and (isinstance(unlabeled_max, bool) or int(unlabeled_max) != unlabeled_max or unlabeled_max < 1):
        raise DataError(f"data.unlabeled_max={unlabeled_max!r} must be a whole number >= 1, or null to keep the whole pool")


def rest_indices(size: int, *used: torch.Tensor) -> torch.Tensor:
    """Sorted indices of 0..size-1 that none of `used` holds."""
    free = torch.ones(size, dtype=torch.bool)
    for idx in used:
        free[torch.as_tensor(idx, dtype=torch.long)] = False
    return free.nonzero().flatten()


def capped(idx: torch.Tensor, unlabeled_max: int | None, seed: int) -> torch.Tensor:
    """At most `unlabeled_max` of `idx`, a seeded uniform draw, kept in ascending order."""
    if unlabeled_max is None or len(idx) <= unlabeled_max:
        return idx
    gen = torch.Generator().manual_seed(int(seed) + _CAP_SEED_OFFSET)
    keep = torch.randperm(len(idx), generator=gen)[: int(unlabeled_max)]
    return idx[torch.sort(keep).values]


def hide_labels(arrays):
    """The same examples with every label UNLABELED (ImageArrays, TokenArrays or StreamedImages)."""
    return dataclasses.replace(arrays, labels=torch.full_like(arrays.labels, UNLABELED))


def check_pool(pool, unlabeled: str, source: str) -> None:
    if pool is None:
        raise DataError(f"data.unlabeled=source but data.source={source} has no unlabelled pool: use data.unlabeled=rest, "
                        "or a source that ships one (data=fashion_mnist_shifted)")
    if len(pool) == 0:
        fix = ("lower data.samples_per_class / data.train_fraction or data.val_per_class so that some of the training pool is left"
               if unlabeled == "rest" else "use data.unlabeled=rest, or check the source's data")
        raise DataError(f"data.unlabeled={unlabeled} is empty for data.source={source}: {fix}")


def check_target(target: dict | None, unlabeled: str | None) -> None:
    if target is None:
        if unlabeled == "target":
            raise DataError("data.unlabeled=target but data.target is null: set data.target.source=<the target domain's source> "
                            "(and its data.target.source_args), or choose data.unlabeled=rest / source")
        return
    if not isinstance(target, dict) or not target.get("source"):
        raise DataError(f"data.target={target!r} names no source: set data.target.source=<a data source> and its "
                        "data.target.source_args, or data.target=null")
    unknown = sorted(set(target) - {"source", "source_args"})
    if unknown:
        raise DataError(f"data.target has no key {', '.join(unknown)}: it takes source and source_args")
    if unlabeled not in (None, "target"):
        raise DataError(f"data.target is set, and data.unlabeled={unlabeled}: with a target domain the unlabelled pool is its "
                        "images; drop data.unlabeled (or set data.unlabeled=target)")


def target_pool(splits):
    """The target source's unlabelled images: its own pool if it ships one, else its training pool."""
    return splits.unlabeled if splits.unlabeled is not None else splits.train


def check_same_classes(classes: list, target_classes: list, source: str, target: str) -> None:
    if list(classes) != list(target_classes):
        def shown(c):
            return ", ".join(str(x) for x in list(c)[:4]) + (", ..." if len(c) > 4 else "")

        raise DataError(f"data.target.source={target} has classes {shown(target_classes)} and data.source={source} has "
                        f"{shown(classes)}: a target domain must have the source's classes, in the same order")
