"""CIFAR-10 through torchvision (root/cifar-10-batches-py), downloaded there where allowed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferlab.data.arrays import ImageArrays, Splits
from transferlab.data.sources.registry import ROOT_KEY, SourceContext, register
from transferlab.errors import DataError


@register("cifar10")
def load_cifar10(root: str | None, download: bool = True, context: SourceContext | None = None) -> Splits:
    """CIFAR-10 through torchvision (root/cifar-10-batches-py), downloaded there if allowed."""
    fix = (
        f"fix: set {ROOT_KEY} to a folder holding cifar-10-batches-py/ (from cifar-10-python.tar.gz), "
        "or allow download=true where there is internet"
    )
    if not root:
        raise DataError(f"CIFAR-10 needs a folder: {ROOT_KEY} is unset.\n{fix}")
    import torchvision

    root = str(Path(root).expanduser())
    splits = {}
    for name, train in (("train", True), ("test", False)):
        try:
            ds = torchvision.datasets.CIFAR10(root, train=train, download=download)
        except Exception as e:  # RuntimeError when absent, URLError/OSError when offline
            how = "download failed" if download else "not found and download=false"
            raise DataError(f"CIFAR-10 not in {root} ({how}: {type(e).__name__}: {e}).\n{fix}") from e
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        splits[name] = ImageArrays(images, torch.as_tensor(ds.targets, dtype=torch.int64), list(ds.classes))
    return Splits(train=splits["train"], test=splits["test"])
