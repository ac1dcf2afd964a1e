"""Per-batch preprocessing on uint8 tensors: channels, resize/crop, augmentation, normalisation.

Datasets hand out uint8 [B, C, H, W] batches; this runs once per batch on the training device
instead of PIL once per sample, which is what keeps the data pipeline near the model-alone bound.
Eval follows timm: resize to image_size / crop_pct, centre-crop image_size. Training uses a
random resized crop and horizontal flip, sampled per image and applied in one grid_sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.data.batch import Batch

_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


@dataclass(frozen=True)
class Preprocess:
    """What an image backbone needs done to its input: size, normalisation, interpolation, crop."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    in_chans: int = 3

    def as_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "in_chans": self.in_chans,
        }

    @property
    def storage_size(self) -> int:
        """The side images are stored at: a little above the crop, so the eval centre crop sees what timm's does."""
        return math.floor(self.image_size / self.crop_pct)


@dataclass
class AugmentConfig:
    enabled: bool = True
    scale: tuple[float, float] = (0.35, 1.0)  # area fraction of the random crop
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio of the random crop
    hflip: float = 0.5  # probability


class BatchPreprocess(nn.Module):
    def __init__(
        self,
        image_size: int,
        mean,
        std,
        interpolation: str = "bicubic",
        crop_pct: float = 0.875,
        in_chans: int = 3,
        augment: AugmentConfig | None = None,
    ):
        super().__init__()
        self.image_size = int(image_size)
        self.mode = _MODES.get(interpolation, "bilinear")
        self.crop_pct = float(crop_pct)
        self.in_chans = in_chans
        self.augment = augment or AugmentConfig(enabled=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_chans:
            return x
        if c == 1:
            return x.expand(-1, self.in_chans, -1, -1)
        if self.in_chans == 1:
            return x.mean(1, keepdim=True)
        raise ValueError(f"cannot feed {c}-channel images to a backbone that takes {self.in_chans}")

    def _eval_geometry(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        short = math.floor(self.image_size / self.crop_pct)
        # The long side is truncated, as torchvision's Resize does, so crops line up with timm's.
        size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode=self.mode, antialias=self.mode != "nearest", align_corners=False if self.mode != "nearest" else None)
        top = int(round((x.shape[-2] - self.image_size) / 2))
        left = int(round((x.shape[-1] - self.image_size) / 2))
        return x[..., top : top + self.image_size, left : left + self.image_size]

    def _train_geometry(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b = x.shape[0]
        dev = x.device
        aug = self.augment

        def uniform(lo, hi):
            return torch.rand(b, device="cpu", generator=generator) * (hi - lo) + lo

        area = uniform(*aug.scale)
        log_ratio = uniform(math.log(aug.ratio[0]), math.log(aug.ratio[1]))
        ratio = torch.exp(log_ratio)
        # Crop width/height as fractions of the image side, clamped to fit.
        cw = torch.sqrt(area * ratio).clamp(max=1.0)
        ch = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = uniform(0, 1) * (1 - cw) * 2 - (1 - cw)  # centre in [-1+cw, 1-cw]
        cy = uniform(0, 1) * (1 - ch) * 2 - (1 - ch)
        flip = torch.where(uniform(0, 1) < aug.hflip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = cw * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta.to(dev), [b, x.shape[1], self.image_size, self.image_size], align_corners=False)
        mode = "bilinear" if self.mode == "nearest" else self.mode
        return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=False)

    def apply(self, batch: Batch, train: bool, strong=None) -> Batch:
        """The batch with its uint8 images replaced by the model's input. `strong` (a
        StrongAugment, data/images/strong_augment.py) runs after the training geometry: FixMatch's strong view."""
        return batch.with_inputs(images=self(batch.images, train=train, strong=strong))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, train: bool = False, generator: torch.Generator | None = None, strong=None) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchPreprocess takes uint8 images, got {images.dtype}")
        x = images.float().div_(255.0)
        if train and self.augment.enabled:
            x = self._train_geometry(x, generator)
        else:
            x = self._eval_geometry(x)
        if strong is not None:
            x = strong(x)
        x = self._channels(x.clamp_(0.0, 1.0))
        return ((x - self.mean) / self.std).contiguous()
