"""Stratified, seeded carving of a labelled pool into a training subset and a validation set.

One random order per class, fixed by the seed alone: validation is the head of that order, training
the part after it. So the training subset for 10 per class is contained in the one for 100 per
class with the same seed (data-efficiency curves then compare nested sets, not independent draws),
and validation never moves when only the training size changes.
"""

from __future__ import annotations

import math

import torch

from transferlab.errors import DataError


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding: round(0.5) == 0 would empty classes of 1 image.
    return int(math.floor(x + 0.5))


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and not (0.0 < float(value) <= 1.0):
        raise DataError(f"data.{name}={value} is outside (0, 1]: give a fraction such as 0.1, or null to leave it unset")


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < minimum):
        raise DataError(f"data.{name}={value!r} must be a whole number >= {minimum}, or null to leave it unset")


def stratified_split(
    labels: torch.Tensor,
    *,
    seed: int,
    val_per_class: int | None = None,
    val_fraction: float | None = None,
    samples_per_class: int | None = None,
    train_fraction: float | None = None,
    classes: list[str] | None = None,
    unit: str = "images",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train_idx, val_idx) into ``labels``, each sorted, int64 and disjoint.

    Per class, validation takes ``val_per_class`` (or ``val_fraction`` of the class) and training
    the next ``samples_per_class`` (or ``train_fraction`` of what validation left); unset means no
    validation and all the rest for training respectively. ``classes`` and ``unit`` (what one example
    is: images, texts): words for error messages.
    """
    if val_per_class is not None and val_fraction is not None:
        raise DataError(
            f"data.val_per_class={val_per_class} and data.val_fraction={val_fraction} are both set: set one of them to null"
        )
    if samples_per_class is not None and train_fraction is not None:
        raise DataError(
            f"data.samples_per_class={samples_per_class} and data.train_fraction={train_fraction} are both set: set one of them to null"
        )
    _check_count("val_per_class", val_per_class, 0)
    _check_count("samples_per_class", samples_per_class, 1)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("train_fraction", train_fraction)

    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    labels = labels.to(torch.int64).cpu()
    empty = torch.empty(0, dtype=torch.int64)
    if labels.numel() == 0:
        return empty, empty.clone()
    if int(labels.min()) < 0:
        raise ValueError("labels must be class indices >= 0")

    counts = torch.bincount(labels)
    present = (counts > 0).nonzero().flatten().tolist()

    n_val = torch.zeros_like(counts)
    n_train = torch.zeros_like(counts)
    for c in present:
        count = int(counts[c])
        name = f"class {classes[c]!r}" if classes and c < len(classes) else f"class {c}"
        if val_per_class is not None:
            v = int(val_per_class)
        elif val_fraction is not None:
            v = _round_half_up(val_fraction * count)
        else:
            v = 0
        if v > count:
            raise DataError(
                f"{name} has {count} {unit}, fewer than data.val_per_class={val_per_class}: lower data.val_per_class or use data.val_fraction"
            )
        left = count - v
        if samples_per_class is not None:
            t = int(samples_per_class)
            if t > left:
                raise DataError(
                    f"{name} has {left} {unit} left after validation ({count} in all, {v} for val), fewer than "
                    f"data.samples_per_class={samples_per_class}: lower data.samples_per_class or data.val_per_class"
                )
        elif train_fraction is not None:
            # At least one: a class that vanishes from training cannot be learned at all.
            t = min(left, max(1, _round_half_up(train_fraction * left)))
        else:
            t = left
        n_val[c], n_train[c] = v, t

    by_class, cls, rank = _class_orders(labels, counts, seed)
    val_mask = rank < n_val[cls]
    train_mask = (rank >= n_val[cls]) & (rank < n_val[cls] + n_train[cls])
    train_idx = torch.sort(by_class[train_mask]).values
    val_idx = torch.sort(by_class[val_mask]).values
    return train_idx, val_idx


def _class_orders(labels: torch.Tensor, counts: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every index grouped by class, each class in its own seeded random order; the class of each,
    and its rank within its class."""
    # One global permutation, then a stable sort by label: every class comes out in its own random
    # order, and that order depends on the seed and the labels only, never on the sizes asked for.
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(labels.numel(), generator=gen)
    by_class = perm[torch.argsort(labels[perm], stable=True)]
    cls = labels[by_class]
    starts = torch.cumsum(counts, 0) - counts
    return by_class, cls, torch.arange(labels.numel()) - starts[cls]


# Another stream than the carving's own order: the kept part of a cut class is not the head that
# validation would then take first.
_SKEW_STREAM = 104_729


def skewed_pool(labels: torch.Tensor, fractions: dict[int, float], seed: int) -> torch.Tensor:
    """Sorted indices of a pool with class c cut to `fractions[c]` of its examples (at least one),
    a seeded draw; the other classes are kept whole. A data set made skewed on purpose, to measure
    what imbalance does (data.skew)."""
    labels = torch.as_tensor(labels).to(torch.int64).cpu()
    counts = torch.bincount(labels) if labels.numel() else torch.zeros(0, dtype=torch.int64)
    keep = counts.clone()
    for c, fraction in fractions.items():
        if c < len(counts) and counts[c] > 0:
            keep[c] = min(int(counts[c]), max(1, _round_half_up(float(fraction) * int(counts[c]))))
    if labels.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    by_class, cls, rank = _class_orders(labels, counts, int(seed) * 2 + _SKEW_STREAM)
    return torch.sort(by_class[rank < keep[cls]]).values
