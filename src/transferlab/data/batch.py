"""The batch every loader yields and every model step takes: labels plus exactly one kind of input.

Images arrive as uint8 and leave the per-batch transform as normalised floats; cached features are
what a frozen backbone produced ([B, D], or [B, V, D] for V views of each image). The model reads
the field that is set, so nothing downstream guesses the input's kind from its shape.

BatchTransform, what a backbone supplies to turn a loader's batch into its input, is named here
rather than beside the DataModule, so that a backbone can name it without importing the DataModule.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch


@dataclass
class Batch:
    labels: torch.Tensor | None = None  # int64 [B]; None for inputs without labels (prediction, extraction)
    images: torch.Tensor | None = None  # uint8 [B, C, H, W] from a loader; float after the transform
    features: torch.Tensor | None = None  # float [B, D] or [B, V, D]: cached backbone features
    input_ids: torch.Tensor | None = None  # int64 [B, T]: token ids
    attention_mask: torch.Tensor | None = None  # [B, T]: 1 for tokens, 0 for padding

    def __post_init__(self) -> None:
        inputs = [f.name for f in fields(self) if f.name not in ("labels", "attention_mask") and getattr(self, f.name) is not None]
        if len(inputs) != 1:
            raise ValueError(f"a Batch carries exactly one kind of input, got {inputs or 'none'}")

    def __len__(self) -> int:
        return len(self.labels) if self.labels is not None else len(self.inputs)

    @property
    def kind(self) -> str:
        return next(f.name for f in fields(self) if f.name not in ("labels", "attention_mask") and getattr(self, f.name) is not None)

    @property
    def inputs(self) -> torch.Tensor:
        return getattr(self, self.kind)

    def with_inputs(self, **changes) -> "Batch":
        return replace(self, **changes)

    def pin_memory(self) -> "Batch":
        # DataLoader's pin_memory calls this on objects it does not know.
        return Batch(**{f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for f in fields(self) for v in [getattr(self, f.name)]})


@dataclass
class SemiBatch:
    """A training step's labelled batch and the unlabelled batch drawn with it (data.unlabeled).

    From a loader, `unlabeled` holds uint8 images; after the per-batch transform it is the weak
    (training-augmented) view and `strong`, when the strategy asks for one, a second, strongly
    augmented view of the same images (FixMatch). Their labels are all UNLABELED.
    """

    labeled: Batch
    unlabeled: Batch
    strong: Batch | None = None

    def __len__(self) -> int:
        return len(self.labeled)

    @property
    def labels(self) -> torch.Tensor:
        return self.labeled.labels

    @property
    def inputs(self) -> torch.Tensor:
        return self.labeled.inputs

    def views(self) -> list[Batch]:
        """The unlabelled views, weak first."""
        return [self.unlabeled] + ([self.strong] if self.strong is not None else [])

    def pin_memory(self) -> "SemiBatch":
        return SemiBatch(*(b.pin_memory() if b is not None else None for b in (self.labeled, self.unlabeled, self.strong)))


def concat(batches: list[Batch]) -> Batch:
    """One batch of several, for one forward pass (BatchNorm then sees the labelled and unlabelled
    images together, as FixMatch and DANN train). Token ids are right-padded to the longest."""
    kind = batches[0].kind
    if any(b.kind != kind for b in batches):
        raise ValueError(f"cannot join batches of {sorted({b.kind for b in batches})}")
    values = [b.inputs for b in batches]
    masks = None
    if kind == "input_ids":
        width = max(v.shape[1] for v in values)
        masks = [torch.nn.functional.pad(b.attention_mask if b.attention_mask is not None else torch.ones_like(b.input_ids),
                                         (0, width - b.input_ids.shape[1])) for b in batches]
        values = [torch.nn.functional.pad(v, (0, width - v.shape[1])) for v in values]
    return Batch(**{kind: torch.cat(values)}, attention_mask=torch.cat(masks) if masks is not None else None)


class BatchTransform(Protocol):
    """Turns a loader's batch into the model's input on the device (augmenting when `train`)."""

    def to(self, device): ...

    def apply(self, batch: Batch, train: bool) -> Batch: ...
