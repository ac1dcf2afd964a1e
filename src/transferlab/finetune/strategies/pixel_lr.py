"""Logistic regression on raw pixels: the image baseline no transfer method should lose to.

Images are area-resized to `pixel_size` (storage size is the backbone's, far more pixels than a
linear model can use from few labels), scaled to [0, 1] and flattened; the L2 logistic regression is
the linear probe's own L-BFGS fit (finetune/linear_probe.py), its penalty chosen on validation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from transferlab.config.checks import rule
from transferlab.finetune.linear_probe import fit_linear_probe
from transferlab.finetune.strategies.base import ClassicalStrategy, ProbeSettings, StrategyConfig, register


@dataclass
class PixelLrConfig(ProbeSettings, StrategyConfig):
    pixel_size: int = field(default=28, metadata=rule("int", low=4, high=512))
    grayscale: bool = field(default=True, metadata=rule("bool", hint="true: the channels' mean, one value per pixel"))


class PixelLogReg:
    def __init__(self, config: PixelLrConfig, weight: torch.Tensor, bias: torch.Tensor, summary: dict):
        self.pixel_size, self.grayscale = config.pixel_size, config.grayscale
        self.weight, self.bias, self.summary = weight, bias, summary
        self.num_parameters = weight.numel() + bias.numel()

    def log_proba(self, arrays) -> torch.Tensor:
        return (pixels(arrays.images, self.pixel_size, self.grayscale) @ self.weight.T + self.bias).log_softmax(-1)


def pixels(images: torch.Tensor, size: int, grayscale: bool, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float [N, C' * size * size] in [0, 1], in chunks (a whole split as floats
    at storage size would be many times the uint8 split)."""
    out = []
    for start in range(0, len(images), chunk):  # slices, so a streamed split is read a chunk at a time too
        x = images[start : start + chunk].float() / 255
        if grayscale:
            x = x.mean(1, keepdim=True)
        out.append(F.interpolate(x, size=(size, size), mode="area").flatten(1))
    return torch.cat(out)


@register("pixel_lr")
class PixelLr(ClassicalStrategy):
    Config = PixelLrConfig
    modality = "image"

    def fit_classical(self, train, val, num_classes: int) -> PixelLogReg:
        c = self.config
        t0 = time.perf_counter()
        probe = fit_linear_probe(pixels(train.images, c.pixel_size, c.grayscale), train.labels,
                                 pixels(val.images, c.pixel_size, c.grayscale), val.labels, num_classes,
                                 grid=c.probe_weight_decays, max_iter=c.probe_max_iter)
        summary = {**probe.summary(), "solver": "pixel_lr", "fit_s": round(time.perf_counter() - t0, 2)}
        return PixelLogReg(c, probe.weight, probe.bias, summary)
