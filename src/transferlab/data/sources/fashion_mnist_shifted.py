"""Fashion-MNIST under a corruption shift (docs/unlabeled.md).

The labelled source domain is clean Fashion-MNIST; the target domain is the same images under one
fixed corruption (data/images/corruptions.py). The splits:
- train: the clean labelled training pool, exactly data=fashion_mnist's;
- test: the 10,000 test images corrupted, with their real labels (the target's test split);
- unlabeled: the 60,000 training images corrupted, every label UNLABELED: the target-domain pool
  that domain adaptation and semi-supervised methods may train on without its labels.

The corrupted images do not depend on the run's seed, so every run is scored on the same test set.
"""

from __future__ import annotations

import torch

from transferlab.data.arrays import UNLABELED, ImageArrays, Splits
from transferlab.data.images.corruptions import MIX, NAMES, SEVERITIES, corrupt
from transferlab.data.sources.fashion_mnist import load_fashion_mnist
from transferlab.data.sources.registry import SourceContext, register
from transferlab.errors import DataError

CORRUPTION_KEY = "data.source_args.corruption"
SEVERITY_KEY = "data.source_args.severity"


def check_args(corruption: object, severity: object) -> None:
    """DataError naming the key and its choices, before any file is read."""
    if corruption not in NAMES:
        raise DataError(f"{CORRUPTION_KEY}={corruption!r} is not a corruption: use one of {', '.join(NAMES)}")
    # bool is an int to Python, and severity=true is a typo, not level 1.
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise DataError(
            f"{SEVERITY_KEY}={severity!r} is not a severity: use an integer from {SEVERITIES[0]} (mildest) to {SEVERITIES[-1]}"
        )


@register("fashion_mnist_shifted")
def load_fashion_mnist_shifted(
    root: str | None = None,
    download: bool = True,
    corruption: str = MIX,
    severity: int = 3,
    context: SourceContext | None = None,
) -> Splits:
    """Clean Fashion-MNIST train, its test set under `corruption` at `severity`, and the corrupted
    training images as the unlabelled target pool. Files are found as data=fashion_mnist finds them."""
    check_args(corruption, severity)
    clean = load_fashion_mnist(root, download=download, context=context)
    classes = list(clean.train.classes)
    test = ImageArrays(corrupt(clean.test.images, corruption, severity, "test"), clean.test.labels.clone(), classes)
    unlabeled = ImageArrays(
        corrupt(clean.train.images, corruption, severity, "train"),
        torch.full_like(clean.train.labels, UNLABELED),
        classes,
    )
    return Splits(train=clean.train, test=test, unlabeled=unlabeled)
