"""Class frequencies of a labelled pool, and what a run does about them.

`data.samples_per_class` draws the same number of examples from every class, whatever the pool
held. On a skewed pool that subset teaches the classifier a uniform prior, so at test, on the
natural distribution, it predicts the rare classes too often and their precision falls. The
DataModule says so once (`warn_balanced_subset`). The remedies, for a natural (skewed) subset, live
where they act: a class-balanced sampler for the training loader (`balanced_sample_weights`,
data.sampler), class weights and logit adjustment in the loss (finetune/class_imbalance.py).
"""

from __future__ import annotations

import logging

import torch

from transferlab.errors import DataError

log = logging.getLogger(__name__)

SAMPLERS = ("natural", "balanced")
# A pool whose largest class holds more than this many times its smallest one is called skewed.
SKEW_WARNING_RATIO = 2.0


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(torch.as_tensor(labels).to(torch.int64).cpu(), minlength=num_classes)


def prior_of(counts: torch.Tensor) -> torch.Tensor:
    """Each class's share of `counts` (float64)."""
    counts = counts.double()
    return counts / counts.sum().clamp_min(1)


def skew_ratio(counts: torch.Tensor) -> float:
    """The largest class's count over the smallest's, among the classes present (1.0: balanced)."""
    present = counts[counts > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def balanced_sample_weights(labels: torch.Tensor) -> torch.Tensor:
    """One drawing weight per example, 1 / (its class's count): a draw by them picks every class alike."""
    labels = torch.as_tensor(labels).to(torch.int64).cpu()
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


def warn_balanced_subset(pool_counts: torch.Tensor, samples_per_class: int | None, classes: list[str]) -> bool:
    """A warning when a balanced subset (data.samples_per_class) is drawn from a skewed pool; True if it was given."""
    ratio = skew_ratio(pool_counts)
    if samples_per_class is None or ratio <= SKEW_WARNING_RATIO:
        return False
    present = (pool_counts > 0).nonzero().flatten()
    big, small = present[pool_counts[present].argmax()], present[pool_counts[present].argmin()]
    log.warning(
        "data.samples_per_class=%s draws a balanced subset from a skewed pool: class %r has %d examples there, "
        "class %r %d (%.1fx). Trained on the balanced subset, the model predicts the rare classes as often as the "
        "common ones, which suits balanced test data; on data that follows the pool's prior their precision falls. "
        "For such data draw a natural subset (data.samples_per_class=null data.train_fraction=<f>) and correct its "
        "skew with optim.class_weights=balanced, data.sampler=balanced or optim.logit_adjustment=true "
        "(docs/data.md#class-imbalance compares them)",
        samples_per_class, _name(classes, big), int(pool_counts[big]), _name(classes, small), int(pool_counts[small]), ratio,
    )
    return True


def _name(classes: list[str], c) -> str:
    c = int(c)
    return classes[c] if c < len(classes) else str(c)


def skew_fractions(skew: dict | None, classes: list[str]) -> dict[int, float]:
    """data.skew as {class index: fraction}; its keys may be class indices or class names."""
    out: dict[int, float] = {}
    for key, fraction in (skew or {}).items():
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            index = int(key)
        elif key in classes:
            index = classes.index(key)
        else:
            raise DataError(f"data.skew names class {key!r}, which this data set does not have: use a class index "
                            f"(0 to {len(classes) - 1}) or one of its class names ({', '.join(classes[:10])}...)")
        if not 0 <= index < len(classes):
            raise DataError(f"data.skew names class index {index}, and this data set has {len(classes)} classes: "
                            f"use 0 to {len(classes) - 1}")
        out[index] = float(fraction)
    return out
