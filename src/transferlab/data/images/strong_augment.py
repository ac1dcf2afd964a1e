"""The strong view of FixMatch (Sohn et al. 2020): RandAugment-style operations and Cutout, per image, on a batch.

Runs on float images in [0, 1] after the random crop and flip (the weak view's geometry) and
before normalisation, on the training device, once per batch like the rest of the preprocessing
(data/images/transforms.py). Each image gets `num_ops` operations drawn uniformly from OPS, each at a
magnitude drawn uniformly from (0, 1] (FixMatch's RandAugment variant: no global magnitude to
tune), then a square of grey, `cutout` of the side, at a random place. Every draw comes from the
global torch RNG, which the DataModule seeds per training batch (utils/seeding.py).

Geometric operations fill what they uncover with mid grey, as Cutout does, rather than with
black, which is a colour the data may hold. Histogram equalisation is left out: it needs a
per-image sort and adds little beside autocontrast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_GREY = 0.5
# At magnitude 1: the strongest version of each operation.
_MAX_ROTATE_DEG = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.3  # of the image side
_MAX_ENHANCE = 0.9    # blend factor away from 1 (brightness, contrast, colour, sharpness)


def _signed(m: torch.Tensor) -> torch.Tensor:
    """The magnitude with a random sign: each enhancement and geometric operation goes either way."""
    return m * (torch.randint(0, 2, m.shape, device="cpu") * 2 - 1).to(m)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: other + factor * (x - other); factor 1 is x itself."""
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp(0.0, 1.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True).expand_as(x)
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def identity(x, m):
    return x


def autocontrast(x, m):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def brightness(x, m):
    return _blend(x, torch.zeros_like(x), 1 + _MAX_ENHANCE * _signed(m))


def contrast(x, m):
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    return _blend(x, mean, 1 + _MAX_ENHANCE * _signed(m))


def color(x, m):
    return _blend(x, _grey(x), 1 + _MAX_ENHANCE * _signed(m))


def sharpness(x, m):
    # PIL's SMOOTH kernel, the border left as it is.
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device, dtype=x.dtype) / 13
    blurred = F.conv2d(x, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
    blurred[..., 0, :], blurred[..., -1, :], blurred[..., :, 0], blurred[..., :, -1] = x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]
    return _blend(x, blurred, 1 + _MAX_ENHANCE * _signed(m))


def posterize(x, m):
    bits = (8 - torch.round(m * 4)).view(-1, 1, 1, 1)  # 8 (unchanged) .. 4 bits
    step = torch.pow(2.0, 8 - bits)
    return torch.floor(torch.floor(x * 255) / step) * step / 255


def solarize(x, m):
    threshold = (1 - m).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 1 - x, x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x - _GREY, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + _GREY


def _theta(n: int) -> torch.Tensor:
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    return theta


def rotate(x, m):
    angle = _signed(m).cpu() * math.radians(_MAX_ROTATE_DEG)
    theta = _theta(len(x))
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    return _affine(x, theta)


def shear_x(x, m):
    theta = _theta(len(x))
    theta[:, 0, 1] = _signed(m).cpu() * _MAX_SHEAR
    return _affine(x, theta)


def shear_y(x, m):
    theta = _theta(len(x))
    theta[:, 1, 0] = _signed(m).cpu() * _MAX_SHEAR
    return _affine(x, theta)


def translate_x(x, m):
    theta = _theta(len(x))
    theta[:, 0, 2] = _signed(m).cpu() * _MAX_TRANSLATE * 2  # grid coordinates span 2
    return _affine(x, theta)


def translate_y(x, m):
    theta = _theta(len(x))
    theta[:, 1, 2] = _signed(m).cpu() * _MAX_TRANSLATE * 2
    return _affine(x, theta)


OPS = (identity, autocontrast, brightness, contrast, color, sharpness, posterize, solarize, rotate, shear_x, shear_y,
       translate_x, translate_y)


def cutout(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """A grey square of `fraction` of the shorter side per image, centred anywhere (clipped at the border)."""
    if fraction <= 0:
        return x
    b, _, h, w = x.shape
    side = max(1, int(round(fraction * min(h, w))))
    cy = torch.randint(0, h, (b,), device="cpu").view(-1, 1, 1)
    cx = torch.randint(0, w, (b,), device="cpu").view(-1, 1, 1)
    ys = torch.arange(h).view(1, -1, 1)
    xs = torch.arange(w).view(1, 1, -1)
    inside = ((ys - cy).abs() <= side // 2) & ((xs - cx).abs() <= side // 2)
    return torch.where(inside.unsqueeze(1).to(x.device), torch.full_like(x, _GREY), x)


@dataclass(frozen=True)
class StrongAugment:
    num_ops: int = 2
    cutout: float = 0.5  # the square's side, a fraction of the image's shorter side; 0: none

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for _ in range(self.num_ops):
            choice = torch.randint(0, len(OPS), (len(x),), device="cpu")
            magnitude = torch.rand(len(x), device="cpu").clamp_min(1e-3)
            for k, op in enumerate(OPS):
                rows = (choice == k).nonzero().flatten()
                if len(rows) and op is not identity:
                    idx = rows.to(x.device)
                    x[idx] = op(x[idx], magnitude[rows].to(x.device)).clamp(0.0, 1.0)
        return cutout(x, self.cutout)
