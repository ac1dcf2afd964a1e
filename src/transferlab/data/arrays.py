"""The in-memory form of a labelled data set: uint8 images (or token ids) and int64 labels per split.

A source (data/sources/) returns a ``Splits``: the labelled training pool (validation and the
training subset are carved from it later, in data/subsample.py), the test set, a validation set
only when the source ships one, and an unlabelled pool only when the source has one (for methods
that learn from unlabelled target-domain images; the DataModule serves it with
data.unlabeled=source, data/unlabeled/pool.py). Images keep
their stored size and channels; turning them into the backbone's input happens per batch
(data/images/transforms.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

# The label of every example in `Splits.unlabeled`: not a class index, so a loss or a metric that
# reads it by mistake fails (cross-entropy refuses -1 unless told to ignore it) instead of learning.
UNLABELED = -1


@dataclass
class ImageArrays:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str] = field(default_factory=list)
    field: ClassVar[str] = "images"  # the Batch field the loaders fill with `inputs`

    def __post_init__(self) -> None:
        # Wrong dtypes here surface much later as silent normalisation bugs; fail where they start.
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> torch.Tensor:
        return self.images

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes

    def subset(self, idx: torch.Tensor) -> "ImageArrays":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageArrays(self.images[idx].contiguous(), self.labels[idx], list(self.classes))

    def take(self, idx: torch.Tensor) -> "ImageArrays":
        """`subset(idx)` that may reuse this split's memory: for most of the split in ascending
        order, the rows are moved forward in place and the result is the front of the same tensor,
        so carving a large split never holds it twice (subset's copy would). This object must not
        be used after. A small or unordered `idx` is copied, so that a small subset does not keep
        the whole split's memory alive."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        ascending = len(idx) < 2 or bool((idx[1:] > idx[:-1]).all())
        if 2 * len(idx) < len(self) or not ascending:
            return self.subset(idx)
        # Row k comes from row idx[k] >= k: a block's rows are gathered, then written over rows no
        # later block reads.
        block = 1024
        for start in range(0, len(idx), block):
            rows = idx[start : start + block]
            self.images[start : start + len(rows)] = self.images[rows]
        return ImageArrays(self.images[: len(idx)], self.labels[idx], list(self.classes))


def token_lengths(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Tokens per text of right-padded ids: what a batch cut to its longest text keeps of each row."""
    return (input_ids != pad_id).sum(1)


@dataclass
class TokenArrays:
    """Texts as token ids, right-padded to one length with `pad_id` (the per-batch transform cuts each
    batch to its longest text and derives the attention mask)."""

    input_ids: torch.Tensor  # int64 [N, T]
    labels: torch.Tensor  # int64 [N]
    classes: list[str] = field(default_factory=list)
    pad_id: int = 0
    # The strings the ids came from, kept for what reads words rather than ids (strategy=tfidf_lr).
    texts: list[str] | None = None
    # Which texts the tokenizer cut at max_length (bool [N]); None where the tokenizer did not say.
    is_truncated: torch.Tensor | None = None
    field: ClassVar[str] = "input_ids"

    def __post_init__(self) -> None:
        if self.input_ids.dtype != torch.int64 or self.input_ids.ndim != 2:
            raise ValueError(f"input_ids must be int64 [N, T], got {self.input_ids.dtype} {tuple(self.input_ids.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1 or len(self.labels) != len(self.input_ids):
            raise ValueError(f"labels must be int64 [N] with N = {len(self.input_ids)}, got {tuple(self.labels.shape)}")
        if self.texts is not None and len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.is_truncated is not None and tuple(self.is_truncated.shape) != (len(self.labels),):
            raise ValueError(f"is_truncated must be bool [N] with N = {len(self.labels)}, got {tuple(self.is_truncated.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> torch.Tensor:
        return self.input_ids

    @property
    def nbytes(self) -> int:
        return self.input_ids.nbytes + self.labels.nbytes

    def subset(self, idx: torch.Tensor) -> "TokenArrays":
        idx = torch.as_tensor(idx, dtype=torch.long)
        texts = None if self.texts is None else [self.texts[i] for i in idx.tolist()]
        cut = None if self.is_truncated is None else self.is_truncated[idx]
        return TokenArrays(self.input_ids[idx].contiguous(), self.labels[idx], list(self.classes), self.pad_id, texts, cut)

    take = subset  # token ids are small: a copy is fine

    def lengths(self) -> torch.Tensor:
        return token_lengths(self.input_ids, self.pad_id)


@dataclass
class Splits:
    train: ImageArrays | TokenArrays
    test: ImageArrays | TokenArrays
    val: ImageArrays | TokenArrays | None = None
    # Unlabelled examples (every label UNLABELED, never a real one), e.g. a target domain's images.
    unlabeled: ImageArrays | TokenArrays | None = None
