"""Fixed image corruptions for a distribution-shift benchmark (in the style of MNIST-C / CIFAR-10-C).

Each corruption maps uint8 [N, C, H, W] images to corrupted uint8 images of the same shape, at a
severity from 1 (mildest) to 5. Whatever is random about image i (a rotation angle, a noise field,
which corruption `mix` picks) is drawn from a generator seeded by the corruption's name, the split
and i alone: never by the run's seed or by the other images. So every run, and every subset of a
split, sees the same corrupted image i. Image i of `mix` is exactly image i of the corruption it
drew.

- `rotate`: rotation about the centre by an angle of random sign and a magnitude drawn uniformly
  from [d/2, d] degrees, d = ROTATE_DEGREES[severity]; corners come in black, the background.
- `gaussian_noise`: adds per-pixel noise N(0, NOISE_STD[severity]) on the 0..255 scale, clipped.
- `impulse_noise`: salt and pepper: each pixel independently becomes 0 with probability p/2 and
  255 with probability p/2, p = IMPULSE_FRACTION[severity].
- `blur`: Gaussian blur of standard deviation BLUR_SIGMA[severity] pixels (edges replicated).
- `mix`: each image gets one of the four above, drawn uniformly.

Photometric shifts (the negative 255 - x, lowered contrast) are left out on purpose: a frozen
ImageNet backbone's features hardly move under them (docs/results.md), so they would shift nothing.
"""

from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)
ROTATE_DEGREES = {1: 15.0, 2: 30.0, 3: 45.0, 4: 60.0, 5: 90.0}
NOISE_STD = {1: 10.0, 2: 15.0, 3: 25.0, 4: 40.0, 5: 60.0}
IMPULSE_FRACTION = {1: 0.02, 2: 0.04, 3: 0.07, 4: 0.12, 5: 0.2}
BLUR_SIGMA = {1: 0.5, 2: 0.8, 3: 1.2, 4: 1.6, 5: 2.0}


def image_rng(name: str, split: str, index: int) -> np.random.Generator:
    """The generator of image `index` of `split` under corruption `name`. crc32, not hash():
    Python salts str hashes per process, and the draws must be the same in every run."""
    return np.random.default_rng([zlib.crc32(name.encode()), zlib.crc32(split.encode()), int(index)])


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def rotate(images: torch.Tensor, severity: int, split: str, indices: torch.Tensor) -> torch.Tensor:
    d = ROTATE_DEGREES[severity]
    angles = []
    for i in indices.tolist():
        rng = image_rng("rotate", split, i)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        angles.append(sign * rng.uniform(d / 2, d))
    theta = torch.tensor(angles, dtype=torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(theta)
    # The inverse map (output pixel -> where it samples the input); images are square, so the
    # normalised coordinates grid_sample uses are isotropic and this is a true rotation.
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    x = images.float()
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    return _to_uint8(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


def gaussian_noise(images: torch.Tensor, severity: int, split: str, indices: torch.Tensor) -> torch.Tensor:
    shape = tuple(images.shape[1:])
    noise = np.stack([image_rng("gaussian_noise", split, i).standard_normal(shape, dtype=np.float32) for i in indices.tolist()])
    noise = torch.from_numpy(noise.reshape(len(indices), *shape))
    return _to_uint8(images.float() + NOISE_STD[severity] * noise)


def impulse_noise(images: torch.Tensor, severity: int, split: str, indices: torch.Tensor) -> torch.Tensor:
    p = IMPULSE_FRACTION[severity]
    shape = tuple(images.shape[1:])
    u = np.stack([image_rng("impulse_noise", split, i).random(shape, dtype=np.float32) for i in indices.tolist()])
    u = torch.from_numpy(u.reshape(len(indices), *shape))
    out = images.clone()
    out[u < p / 2] = 0
    out[(u >= p / 2) & (u < p)] = 255
    return out


def blur(images: torch.Tensor, severity: int, split: str, indices: torch.Tensor) -> torch.Tensor:
    sigma = BLUR_SIGMA[severity]
    radius = max(1, math.ceil(3 * sigma))
    # A radius past the image would make the replicated border dominate: cap it at the image.
    radius = min(radius, min(images.shape[-2:]) - 1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    n, c, h, w = images.shape
    x = images.float().reshape(n * c, 1, h, w)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return _to_uint8(x.reshape(n, c, h, w))


Corruption = Callable[[torch.Tensor, int, str, torch.Tensor], torch.Tensor]
CORRUPTIONS: dict[str, Corruption] = {
    "rotate": rotate, "gaussian_noise": gaussian_noise, "impulse_noise": impulse_noise, "blur": blur,
}
MIX = "mix"
NAMES = (*CORRUPTIONS, MIX)


def mix_choices(split: str, indices: torch.Tensor) -> torch.Tensor:
    """Which of CORRUPTIONS (by position) `mix` gives each image."""
    return torch.tensor([int(image_rng(MIX, split, i).integers(len(CORRUPTIONS))) for i in indices.tolist()], dtype=torch.long)


def _corrupt_chunk(images: torch.Tensor, name: str, severity: int, split: str, indices: torch.Tensor) -> torch.Tensor:
    if name != MIX:
        return CORRUPTIONS[name](images, severity, split, indices)
    choices = mix_choices(split, indices)
    out = torch.empty_like(images)
    for k, fn in enumerate(CORRUPTIONS.values()):
        picked = (choices == k).nonzero().flatten()
        if len(picked):
            out[picked] = fn(images[picked], severity, split, indices[picked])
    return out


# Images corrupted at a time: float copies and sampling grids of a whole 60k split at once would
# hold hundreds of megabytes for no gain.
_CHUNK = 8192


def corrupt(images: torch.Tensor, name: str, severity: int, split: str) -> torch.Tensor:
    """`images` (uint8 [N, C, H, W], image i seeded as index i of `split`) under corruption `name`.
    `name` and `severity` are checked by the caller (the source), which knows the keys to name."""
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], _CHUNK):
        stop = min(start + _CHUNK, images.shape[0])
        out[start:stop] = _corrupt_chunk(images[start:stop], name, severity, split, torch.arange(start, stop))
    return out.contiguous()
